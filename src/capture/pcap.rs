//! A ring's snapshot as a file Wireshark opens: pcapng (a section comment naming the device and the window, an
//! interface block for the device, direction flags, and a comment on the packets that did not cross the NAT) or
//! classic pcap. The link type is raw IPv4 (`LINKTYPE_RAW`): the NAT sees IP packets, not frames. The encoding is
//! the `pcap-file` crate's; the output goes out in chunks so that a download never holds a second copy.

use super::filter::Filter;
use super::ring::{Direction, Origin, Snapshot};
use crate::types::Mac;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::{DataLink, Endianness, TsResolution};
use std::borrow::Cow;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Bytes per chunk handed out.
const CHUNK: usize = 64 * 1024;
/// The snap length the files declare (a GSO aggregate is at most 64 KiB, and this is Wireshark's maximum).
const SNAPLEN: u32 = 262_144;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    PcapNg,
    Pcap,
}

/// Who the capture is of, for the file's comments.
pub struct About {
    pub mac: Mac,
    pub name: Option<String>,
    pub ip: Option<Ipv4Addr>,
}

fn utc(ms: u64) -> String {
    crate::types::Time::from_unix_ms(ms).utc()
}

fn section_comment(about: &About, filter: &Filter, snap: &Snapshot, first_last: Option<(u64, u64)>) -> String {
    let name = about.name.as_deref().unwrap_or("(no name)");
    let ip = about.ip.map_or("no address now".to_string(), |ip| ip.to_string());
    let mut s = format!("Gatekeeper capture of {name}, {}, {ip}: its own view of its traffic", about.mac);
    match first_last {
        Some((a, b)) => s += &format!("; packets from {} to {}", utc(a / 1000), utc(b / 1000)),
        None => s += "; no packets",
    }
    let window = match (filter.from_ms, filter.to_ms) {
        (None, None) => "everything the ring held".to_string(),
        (a, b) => format!("window {} to {}", a.map_or("the oldest".into(), utc), b.map_or("the newest".into(), utc)),
    };
    s += &format!("; {window} ({} packets in the ring)", snap.len());
    if let Some(r) = filter.remote {
        s += &format!("; remote {r}");
    }
    if let Some(p) = filter.port {
        s += &format!("; port {p}");
    }
    if let Some(p) = filter.proto {
        s += &format!("; IP protocol {p}");
    }
    s
}

/// Encodes the packets of `snap` that `filter` matches, handing out chunks of about 64 KiB; stops early when `out`
/// returns false (the client went away). Returns the packets written.
pub fn write(
    format: Format,
    about: &About,
    snap: &Snapshot,
    filter: &Filter,
    mut out: impl FnMut(Vec<u8>) -> bool,
) -> usize {
    let matching = || snap.iter().filter(|p| filter.matches(p));
    let first_last = matching()
        .fold(None, |acc: Option<(u64, u64)>, p| Some(acc.map_or((p.time_us, p.time_us), |(a, _)| (a, p.time_us))));
    let mut written = 0;
    match format {
        Format::PcapNg => {
            let shb = SectionHeaderBlock {
                endianness: Endianness::native(),
                options: vec![
                    SectionHeaderOption::Comment(section_comment(about, filter, snap, first_last).into()),
                    SectionHeaderOption::UserApplication(format!("gatekeeper {}", env!("CARGO_PKG_VERSION")).into()),
                ],
                ..SectionHeaderBlock::default()
            };
            let Ok(mut w) = PcapNgWriter::with_section_header(Vec::with_capacity(CHUNK + 70_000), shb) else {
                return 0;
            };
            let label = about.name.clone().unwrap_or_else(|| about.mac.to_string());
            let idb = InterfaceDescriptionBlock {
                linktype: DataLink::RAW,
                snaplen: SNAPLEN,
                options: vec![
                    InterfaceDescriptionOption::IfName(label.into()),
                    InterfaceDescriptionOption::IfDescription(
                        format!(
                            "LAN device {} as it sees its traffic (before NAT going out, after it coming in)",
                            about.mac
                        )
                        .into(),
                    ),
                    InterfaceDescriptionOption::IfMacAddr(Cow::Owned(about.mac.0.to_vec())),
                    // Timestamps in nanoseconds (the crate writes them so).
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            };
            if w.write_pcapng_block(idb).is_err() {
                return 0;
            }
            for p in matching() {
                let mut options = vec![EnhancedPacketOption::Flags(match p.direction {
                    Direction::In => 1,
                    Direction::Out => 2,
                })];
                match p.origin {
                    Origin::Nat => {}
                    Origin::Dns => options.push(EnhancedPacketOption::Comment(
                        "the router's DNS server, talking with the device (not through the NAT)".into(),
                    )),
                    Origin::Dhcp => options.push(EnhancedPacketOption::Comment(
                        "the router's DHCP server, talking with the device (not through the NAT)".into(),
                    )),
                }
                let epb = EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: Duration::from_micros(p.time_us),
                    original_len: p.len,
                    data: Cow::Borrowed(p.data),
                    options,
                };
                if w.write_pcapng_block(epb).is_err() {
                    return written;
                }
                written += 1;
                if w.get_ref().len() >= CHUNK && !out(std::mem::take(w.get_mut())) {
                    return written;
                }
            }
            let rest = w.into_inner();
            if !rest.is_empty() {
                out(rest);
            }
        }
        Format::Pcap => {
            let header = pcap_file::pcap::PcapHeader {
                snaplen: SNAPLEN,
                datalink: DataLink::RAW,
                ts_resolution: TsResolution::MicroSecond,
                endianness: Endianness::native(),
                ..Default::default()
            };
            let mut buf = Vec::with_capacity(CHUNK + 70_000);
            if header.write_to(&mut buf).is_err() {
                return 0;
            }
            for p in matching() {
                let packet = pcap_file::pcap::PcapPacket::new(Duration::from_micros(p.time_us), p.len, p.data);
                let r = packet.write_to::<_, byteorder::NativeEndian>(&mut buf, TsResolution::MicroSecond, SNAPLEN);
                if r.is_err() {
                    return written;
                }
                written += 1;
                if buf.len() >= CHUNK && !out(std::mem::take(&mut buf)) {
                    return written;
                }
            }
            if !buf.is_empty() {
                out(buf);
            }
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::ring::Ring;

    fn ring_with(n: usize) -> Ring {
        let mut r = Ring::new(1 << 20);
        for i in 0..n {
            let mut p = vec![0u8; 60];
            p[0] = 0x45;
            p[9] = 17;
            p[12..16].copy_from_slice(&[10, 0, 0, 5]);
            p[16..20].copy_from_slice(&[203, 0, 113, (i % 2) as u8 + 1]);
            let origin = if i == 0 { Origin::Dns } else { Origin::Nat };
            r.push(1_700_000_000_000_000 + i as u64 * 1000, Direction::Out, origin, &p, 0);
        }
        r
    }

    fn about() -> About {
        About { mac: "02:00:00:00:00:05".parse().unwrap(), name: Some("laptop".into()), ip: None }
    }

    #[test]
    fn pcapng_reads_back_with_its_packets_and_comments() {
        let r = ring_with(10);
        let mut file = Vec::new();
        let f = Filter { remote: Some(Ipv4Addr::new(203, 0, 113, 1)), ..Filter::default() };
        let n = write(Format::PcapNg, &about(), &r.snapshot(), &f, |c| {
            file.extend(c);
            true
        });
        assert_eq!(n, 5);
        let mut reader = pcap_file::pcapng::PcapNgReader::new(&file[..]).unwrap();
        let shb = format!("{:?}", reader.section());
        assert!(shb.contains("laptop") && shb.contains("02:00:00:00:00:05"), "{shb}");
        let mut packets = 0;
        while let Some(b) = reader.next_block() {
            if let pcap_file::pcapng::Block::EnhancedPacket(p) = b.unwrap() {
                assert_eq!(p.data.len(), 60);
                assert_eq!(p.timestamp.as_micros() % 1000, 0);
                packets += 1;
            }
        }
        assert_eq!(packets, 5);
    }

    #[test]
    fn pcap_reads_back_and_a_gone_client_stops_the_writer() {
        let r = ring_with(3000);
        let mut file = Vec::new();
        let n = write(Format::Pcap, &about(), &r.snapshot(), &Filter::default(), |c| {
            file.extend(c);
            true
        });
        let mut reader = pcap_file::pcap::PcapReader::new(&file[..]).unwrap();
        let mut count = 0;
        while let Some(p) = reader.next_packet() {
            p.unwrap();
            count += 1;
        }
        assert_eq!((n, count), (3000, 3000));
        let mut chunks = 0;
        let n = write(Format::Pcap, &about(), &r.snapshot(), &Filter::default(), |_| {
            chunks += 1;
            false
        });
        assert!(chunks == 1 && n < r.len(), "{chunks} {n}");
    }
}
