//! PCP (RFC 6887) MAP and NAT-PMP (RFC 6886) messages: pure encode/decode, no state.
//! Decoding is strict (exact lengths, versions, opcodes, reserved fields not looked at) and
//! never panics; anything that does not fit is `None`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// PCP version (RFC 6887 §7).
pub(crate) const PCP_VERSION: u8 = 2;
/// NAT-PMP version (RFC 6886 §3).
pub(crate) const NATPMP_VERSION: u8 = 0;
/// PCP MAP opcode (RFC 6887 §19.2).
const PCP_OP_MAP: u8 = 1;
/// The response bit of a PCP opcode / the 128 added to a NAT-PMP opcode in its answer.
const RESPONSE: u8 = 0x80;
/// NAT-PMP opcodes (RFC 6886 §3.2, §3.3).
const NATPMP_OP_PUBLIC: u8 = 0;
const NATPMP_OP_MAP_UDP: u8 = 1;
/// IANA protocol number of UDP (the PCP MAP protocol field, RFC 6887 §11.1).
const IPPROTO_UDP: u8 = 17;
/// PCP common header (RFC 6887 §7.1 request, §7.2 response) and MAP opcode data (§11.1).
const PCP_HEADER: usize = 24;
const PCP_MAP_DATA: usize = 36;
/// A PCP MAP request or response without options.
pub(crate) const PCP_MAP_LEN: usize = PCP_HEADER + PCP_MAP_DATA;
/// NAT-PMP message sizes (RFC 6886 §3.2, §3.3).
pub(crate) const NATPMP_PUBLIC_REQUEST_LEN: usize = 2;
const NATPMP_PUBLIC_RESPONSE_LEN: usize = 12;
pub(crate) const NATPMP_MAP_REQUEST_LEN: usize = 12;
const NATPMP_MAP_RESPONSE_LEN: usize = 16;
/// PCP datagrams are at most 1100 bytes (RFC 6887 §7); longer ones are not PCP.
const PCP_MAX_LEN: usize = 1100;

/// PCP result code UNSUPP_VERSION (RFC 6887 §7.4), also NAT-PMP's "Unsupported Version"
/// (RFC 6886 §3.5): the value that sends a PCP client to NAT-PMP.
pub(crate) const UNSUPP_VERSION: u16 = 1;

/// A PCP MAP request (RFC 6887 §11.1) for UDP; `lifetime` 0 deletes the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PcpMapRequest {
    pub(crate) client: Ipv4Addr,
    pub(crate) lifetime: u32,
    pub(crate) nonce: [u8; 12],
    pub(crate) internal_port: u16,
    pub(crate) suggested_port: u16,
    pub(crate) suggested_ip: Option<Ipv4Addr>,
}

impl PcpMapRequest {
    /// Writes the 60 bytes; `None` if `buf` is shorter.
    pub(crate) fn encode(&self, buf: &mut [u8]) -> Option<usize> {
        let out = buf.get_mut(..PCP_MAP_LEN)?;
        out.fill(0);
        out[0] = PCP_VERSION;
        out[1] = PCP_OP_MAP; // R = 0: a request.
        out[4..8].copy_from_slice(&self.lifetime.to_be_bytes());
        // Addresses are 128 bits, IPv4 as IPv4-mapped IPv6 (RFC 6887 §5).
        out[8..24].copy_from_slice(&self.client.to_ipv6_mapped().octets());
        out[24..36].copy_from_slice(&self.nonce);
        out[36] = IPPROTO_UDP;
        out[40..42].copy_from_slice(&self.internal_port.to_be_bytes());
        out[42..44].copy_from_slice(&self.suggested_port.to_be_bytes());
        // No suggestion: the all-zeros IPv4 address ::ffff:0.0.0.0 (RFC 6887 §11.1).
        let ip = self.suggested_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        out[44..60].copy_from_slice(&ip.to_ipv6_mapped().octets());
        Some(PCP_MAP_LEN)
    }
}

/// A PCP MAP response (RFC 6887 §7.2 header, §11.1 MAP data). Options after the MAP data
/// are allowed and skipped (none is requested).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PcpMapResponse {
    pub(crate) result: u8,
    pub(crate) lifetime: u32,
    pub(crate) epoch: u32,
    pub(crate) nonce: [u8; 12],
    pub(crate) protocol: u8,
    pub(crate) internal_port: u16,
    pub(crate) external_port: u16,
    pub(crate) external_ip: IpAddr,
}

impl PcpMapResponse {
    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        // Responses are a multiple of 4 bytes long, at most 1100 (RFC 6887 §7, §8.3).
        if b.len() < PCP_MAP_LEN || b.len() > PCP_MAX_LEN || b.len() % 4 != 0 {
            return None;
        }
        if b[0] != PCP_VERSION || b[1] != (RESPONSE | PCP_OP_MAP) {
            return None;
        }
        let ip: [u8; 16] = b[44..60].try_into().ok()?;
        let ip = Ipv6Addr::from(ip);
        Some(Self {
            result: b[3],
            lifetime: u32::from_be_bytes(b[4..8].try_into().ok()?),
            epoch: u32::from_be_bytes(b[8..12].try_into().ok()?),
            nonce: b[24..36].try_into().ok()?,
            protocol: b[36],
            internal_port: u16::from_be_bytes([b[40], b[41]]),
            external_port: u16::from_be_bytes([b[42], b[43]]),
            external_ip: ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4),
        })
    }

    pub(crate) fn is_udp(&self) -> bool {
        self.protocol == IPPROTO_UDP
    }

    /// Test and simulator side: the answer a PCP server gives.
    pub(crate) fn encode(&self, buf: &mut [u8]) -> Option<usize> {
        let out = buf.get_mut(..PCP_MAP_LEN)?;
        out.fill(0);
        out[0] = PCP_VERSION;
        out[1] = RESPONSE | PCP_OP_MAP;
        out[3] = self.result;
        out[4..8].copy_from_slice(&self.lifetime.to_be_bytes());
        out[8..12].copy_from_slice(&self.epoch.to_be_bytes());
        out[24..36].copy_from_slice(&self.nonce);
        out[36] = self.protocol;
        out[40..42].copy_from_slice(&self.internal_port.to_be_bytes());
        out[42..44].copy_from_slice(&self.external_port.to_be_bytes());
        let ip = match self.external_ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        out[44..60].copy_from_slice(&ip.octets());
        Some(PCP_MAP_LEN)
    }
}

/// A NAT-PMP public address request (RFC 6886 §3.2).
pub(crate) fn encode_natpmp_public_request(buf: &mut [u8]) -> Option<usize> {
    let out = buf.get_mut(..NATPMP_PUBLIC_REQUEST_LEN)?;
    out.copy_from_slice(&[NATPMP_VERSION, NATPMP_OP_PUBLIC]);
    Some(NATPMP_PUBLIC_REQUEST_LEN)
}

/// A NAT-PMP UDP mapping request (RFC 6886 §3.3); `lifetime` 0 (with `suggested_port` 0)
/// deletes it (§3.4).
pub(crate) fn encode_natpmp_map_request(
    buf: &mut [u8],
    internal_port: u16,
    suggested_port: u16,
    lifetime: u32,
) -> Option<usize> {
    let out = buf.get_mut(..NATPMP_MAP_REQUEST_LEN)?;
    out[0] = NATPMP_VERSION;
    out[1] = NATPMP_OP_MAP_UDP;
    out[2..4].fill(0);
    out[4..6].copy_from_slice(&internal_port.to_be_bytes());
    out[6..8].copy_from_slice(&suggested_port.to_be_bytes());
    out[8..12].copy_from_slice(&lifetime.to_be_bytes());
    Some(NATPMP_MAP_REQUEST_LEN)
}

/// A NAT-PMP answer (RFC 6886 §3.2, §3.3, §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NatPmpResponse {
    /// The gateway's external address.
    Public {
        result: u16,
        epoch: u32,
        ip: Ipv4Addr,
    },
    /// A UDP mapping.
    Map {
        result: u16,
        epoch: u32,
        internal_port: u16,
        external_port: u16,
        lifetime: u32,
    },
    /// An error answer too short to carry its opcode's fields: "Unsupported Version" to a
    /// PCP request (RFC 6887 §9 relies on it), or any other code (§3.5: "the server MUST
    /// return" at least the first 8 bytes).
    Error { result: u16, epoch: u32 },
}

impl NatPmpResponse {
    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < 8 || b[0] != NATPMP_VERSION || b[1] & RESPONSE == 0 {
            return None;
        }
        let result = u16::from_be_bytes([b[2], b[3]]);
        let epoch = u32::from_be_bytes(b[4..8].try_into().ok()?);
        let op = b[1] & !RESPONSE;
        match (op, b.len()) {
            (NATPMP_OP_PUBLIC, NATPMP_PUBLIC_RESPONSE_LEN) => {
                let ip: [u8; 4] = b[8..12].try_into().ok()?;
                Some(Self::Public {
                    result,
                    epoch,
                    ip: Ipv4Addr::from(ip),
                })
            }
            (NATPMP_OP_MAP_UDP, NATPMP_MAP_RESPONSE_LEN) => Some(Self::Map {
                result,
                epoch,
                internal_port: u16::from_be_bytes([b[8], b[9]]),
                external_port: u16::from_be_bytes([b[10], b[11]]),
                lifetime: u32::from_be_bytes(b[12..16].try_into().ok()?),
            }),
            (_, 8..=16) if result != 0 => Some(Self::Error { result, epoch }),
            _ => None,
        }
    }

    /// Test and simulator side: the answer a NAT-PMP server gives.
    pub(crate) fn encode(&self, buf: &mut [u8]) -> Option<usize> {
        let (op, result, epoch, len) = match *self {
            Self::Public { result, epoch, .. } => {
                (NATPMP_OP_PUBLIC, result, epoch, NATPMP_PUBLIC_RESPONSE_LEN)
            }
            Self::Map { result, epoch, .. } => {
                (NATPMP_OP_MAP_UDP, result, epoch, NATPMP_MAP_RESPONSE_LEN)
            }
            Self::Error { result, epoch } => (NATPMP_OP_MAP_UDP, result, epoch, 8),
        };
        let out = buf.get_mut(..len)?;
        out[0] = NATPMP_VERSION;
        out[1] = RESPONSE | op;
        out[2..4].copy_from_slice(&result.to_be_bytes());
        out[4..8].copy_from_slice(&epoch.to_be_bytes());
        match *self {
            Self::Public { ip, .. } => out[8..12].copy_from_slice(&ip.octets()),
            Self::Map {
                internal_port,
                external_port,
                lifetime,
                ..
            } => {
                out[8..10].copy_from_slice(&internal_port.to_be_bytes());
                out[10..12].copy_from_slice(&external_port.to_be_bytes());
                out[12..16].copy_from_slice(&lifetime.to_be_bytes());
            }
            Self::Error { .. } => {}
        }
        Some(len)
    }
}

/// Server side, for tests and the simulator: a request a PCP / NAT-PMP server receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayRequest {
    /// PCP MAP for UDP (RFC 6887 §11.1).
    PcpMap {
        /// The client's address as it wrote it (checked against the source: §8.1).
        client: IpAddr,
        /// Requested lifetime in seconds; 0 deletes.
        lifetime: u32,
        /// The mapping nonce (echoed in the answer).
        nonce: [u8; 12],
        /// The internal port.
        internal_port: u16,
        /// The suggested external port (0: none).
        suggested_port: u16,
    },
    /// NAT-PMP public address request (RFC 6886 §3.2).
    NatPmpPublic,
    /// NAT-PMP UDP mapping request (RFC 6886 §3.3).
    NatPmpMap {
        /// The internal port.
        internal_port: u16,
        /// The suggested external port.
        suggested_port: u16,
        /// Requested lifetime in seconds; 0 deletes.
        lifetime: u32,
    },
}

impl GatewayRequest {
    /// Parses what a client sent to port 5351; `None` for anything else.
    pub fn decode(b: &[u8]) -> Option<Self> {
        match (b.first()?, b.get(1)?, b.len()) {
            (&PCP_VERSION, &PCP_OP_MAP, PCP_MAP_LEN..=PCP_MAX_LEN) if b[36] == IPPROTO_UDP => {
                let ip: [u8; 16] = b[8..24].try_into().ok()?;
                let ip = Ipv6Addr::from(ip);
                Some(Self::PcpMap {
                    client: ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4),
                    lifetime: u32::from_be_bytes(b[4..8].try_into().ok()?),
                    nonce: b[24..36].try_into().ok()?,
                    internal_port: u16::from_be_bytes([b[40], b[41]]),
                    suggested_port: u16::from_be_bytes([b[42], b[43]]),
                })
            }
            (&NATPMP_VERSION, &NATPMP_OP_PUBLIC, NATPMP_PUBLIC_REQUEST_LEN) => {
                Some(Self::NatPmpPublic)
            }
            (&NATPMP_VERSION, &NATPMP_OP_MAP_UDP, NATPMP_MAP_REQUEST_LEN) => {
                Some(Self::NatPmpMap {
                    internal_port: u16::from_be_bytes([b[4], b[5]]),
                    suggested_port: u16::from_be_bytes([b[6], b[7]]),
                    lifetime: u32::from_be_bytes(b[8..12].try_into().ok()?),
                })
            }
            _ => None,
        }
    }
}

/// Server side, for tests and the simulator: the answer to `req` granting a UDP mapping to
/// `external` for `lifetime` seconds (0 for a delete), with the server's `epoch` seconds.
/// Returns the length written into `buf` (at least 60 bytes).
pub fn encode_gateway_grant(
    buf: &mut [u8],
    req: &GatewayRequest,
    external: std::net::SocketAddrV4,
    lifetime: u32,
    epoch: u32,
) -> Option<usize> {
    match *req {
        GatewayRequest::PcpMap {
            nonce,
            internal_port,
            ..
        } => PcpMapResponse {
            result: 0,
            lifetime,
            epoch,
            nonce,
            protocol: IPPROTO_UDP,
            internal_port,
            external_port: if lifetime == 0 { 0 } else { external.port() },
            external_ip: IpAddr::V4(*external.ip()),
        }
        .encode(buf),
        GatewayRequest::NatPmpPublic => NatPmpResponse::Public {
            result: 0,
            epoch,
            ip: *external.ip(),
        }
        .encode(buf),
        GatewayRequest::NatPmpMap { internal_port, .. } => NatPmpResponse::Map {
            result: 0,
            epoch,
            internal_port,
            external_port: if lifetime == 0 { 0 } else { external.port() },
            lifetime,
        }
        .encode(buf),
    }
}

/// Server side: the answer of a NAT-PMP-only gateway to a PCP request (RFC 6887 §9, RFC
/// 6886 §3.5: version 0, "Unsupported Version").
pub fn encode_natpmp_unsupported_version(buf: &mut [u8], epoch: u32) -> Option<usize> {
    NatPmpResponse::Error {
        result: UNSUPP_VERSION,
        epoch,
    }
    .encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pcp_map_request_has_the_rfc_6887_layout() {
        let r = PcpMapRequest {
            client: Ipv4Addr::new(192, 168, 1, 10),
            lifetime: 7200,
            nonce: [0xAA; 12],
            internal_port: 4000,
            suggested_port: 4000,
            suggested_ip: None,
        };
        let mut buf = [0xFFu8; 80];
        assert_eq!(r.encode(&mut buf), Some(60));
        // §7.1: version 2, R=0 + opcode MAP (1), 16 reserved bits, lifetime, client address
        // as IPv4-mapped IPv6.
        assert_eq!(&buf[..4], &[2, 1, 0, 0]);
        assert_eq!(&buf[4..8], &7200u32.to_be_bytes());
        assert_eq!(
            &buf[8..24],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 168, 1, 10]
        );
        // §11.1: nonce, protocol 17, 24 reserved bits, internal port, suggested port,
        // suggested external address (::ffff:0.0.0.0 for none).
        assert_eq!(&buf[24..36], &[0xAA; 12]);
        assert_eq!(&buf[36..40], &[17, 0, 0, 0]);
        assert_eq!(&buf[40..44], &[0x0F, 0xA0, 0x0F, 0xA0]);
        assert_eq!(
            &buf[44..60],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0]
        );
        assert_eq!(buf[60], 0xFF, "nothing written past the message");
        assert_eq!(r.encode(&mut [0u8; 59]), None);
    }

    #[test]
    fn natpmp_requests_have_the_rfc_6886_layout() {
        let mut buf = [0xFFu8; 16];
        // §3.2: version 0, opcode 0.
        assert_eq!(encode_natpmp_public_request(&mut buf), Some(2));
        assert_eq!(&buf[..2], &[0, 0]);
        // §3.3: version 0, opcode 1 (UDP), reserved 0, internal port, suggested external
        // port, lifetime.
        assert_eq!(
            encode_natpmp_map_request(&mut buf, 4000, 4001, 7200),
            Some(12)
        );
        assert_eq!(
            &buf[..12],
            &[0, 1, 0, 0, 0x0F, 0xA0, 0x0F, 0xA1, 0, 0, 0x1C, 0x20]
        );
    }

    #[test]
    fn responses_round_trip_and_wrong_shapes_are_refused() {
        let mut buf = [0u8; 64];
        let req = GatewayRequest::PcpMap {
            client: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            lifetime: 60,
            nonce: [7; 12],
            internal_port: 5000,
            suggested_port: 0,
        };
        let ext = "203.0.113.5:6000".parse().unwrap();
        let n = encode_gateway_grant(&mut buf, &req, ext, 60, 99).unwrap();
        let r = PcpMapResponse::decode(&buf[..n]).unwrap();
        assert_eq!((r.result, r.lifetime, r.epoch), (0, 60, 99));
        assert_eq!(r.external_ip, IpAddr::V4(*ext.ip()));
        assert_eq!((r.internal_port, r.external_port), (5000, 6000));
        assert!(r.is_udp());
        // Wrong version, a request (R = 0), bad lengths.
        let mut bad = buf;
        bad[0] = 1;
        assert_eq!(PcpMapResponse::decode(&bad[..n]), None);
        bad = buf;
        bad[1] = 1;
        assert_eq!(PcpMapResponse::decode(&bad[..n]), None);
        assert_eq!(PcpMapResponse::decode(&buf[..n - 1]), None);
        assert_eq!(PcpMapResponse::decode(&buf[..n - 4]), None);

        let n = encode_gateway_grant(&mut buf, &GatewayRequest::NatPmpPublic, ext, 0, 5).unwrap();
        assert_eq!(
            NatPmpResponse::decode(&buf[..n]),
            Some(NatPmpResponse::Public {
                result: 0,
                epoch: 5,
                ip: *ext.ip()
            })
        );
        assert_eq!(NatPmpResponse::decode(&buf[..n - 1]), None);
        let n = encode_natpmp_unsupported_version(&mut buf, 5).unwrap();
        assert_eq!(
            NatPmpResponse::decode(&buf[..n]),
            Some(NatPmpResponse::Error {
                result: UNSUPP_VERSION,
                epoch: 5
            })
        );
        // A request (no response bit) is not an answer.
        assert_eq!(NatPmpResponse::decode(&[0, 1, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn gateway_side_parses_what_the_client_sends() {
        let mut buf = [0u8; 64];
        let r = PcpMapRequest {
            client: Ipv4Addr::new(10, 0, 0, 2),
            lifetime: 0,
            nonce: [3; 12],
            internal_port: 1,
            suggested_port: 2,
            suggested_ip: None,
        };
        let n = r.encode(&mut buf).unwrap();
        assert_eq!(
            GatewayRequest::decode(&buf[..n]),
            Some(GatewayRequest::PcpMap {
                client: IpAddr::V4(r.client),
                lifetime: 0,
                nonce: [3; 12],
                internal_port: 1,
                suggested_port: 2
            })
        );
        let n = encode_natpmp_map_request(&mut buf, 9, 10, 11).unwrap();
        assert_eq!(
            GatewayRequest::decode(&buf[..n]),
            Some(GatewayRequest::NatPmpMap {
                internal_port: 9,
                suggested_port: 10,
                lifetime: 11
            })
        );
        assert_eq!(GatewayRequest::decode(&[0]), None);
        assert_eq!(GatewayRequest::decode(&[]), None);
    }
}
