//! Enums whose variants carry stable text labels (drop reasons counted in metrics, logs and JSON), declared once
//! for every subsystem.

/// Declares a fieldless enum whose every variant has a label: `ALL` (every variant, in declaration order),
/// `as_str`, `index` (the position in `ALL`, for counter arrays sized `ALL.len()`) and `Display`.
macro_rules! labelled_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            pub const ALL: [$name; [$($label),+].len()] = [$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }

            pub fn index(self) -> usize {
                self as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use labelled_enum;

#[cfg(test)]
mod tests {
    labelled_enum! {
        /// A test enum.
        enum Colour {
            /// The first.
            Red => "red",
            Green => "green",
            Blue => "light_blue",
        }
    }

    #[test]
    fn all_labels_indices_and_display_agree() {
        assert_eq!(Colour::ALL, [Colour::Red, Colour::Green, Colour::Blue]);
        for (i, c) in Colour::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        assert_eq!(Colour::Blue.as_str(), "light_blue");
        assert_eq!(Colour::Green.to_string(), "green");
    }
}
