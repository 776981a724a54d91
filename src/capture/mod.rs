//! Retroactive packet capture (issue 16): a ring of recent packets per LAN device. For now the sans-IO ring
//! (`ring`); the packet path's feed, the pcapng download and the live view come next.

pub mod ring;
