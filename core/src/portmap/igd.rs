//! UPnP IGD on the wire, without state: SSDP search requests and answers (UPnP Device
//! Architecture 1.1 §1.3.2, §1.3.3), `http://` URLs on the gateway, HTTP/1.1 responses (RFC
//! 7230 §3, §3.3.3, §4.1: `Content-Length`, chunked, or to the end of the stream), the device
//! description's WAN connection service (UDA 1.1 §2.3) and SOAP control (UDA 1.1 §3.2:
//! requests built here, answers and `UPnPError` faults parsed here).
//!
//! Every parser is strict and bounded: input over its cap, a missing or repeated field, a
//! character where none may be, is an error ([`IgdError`]), never a panic. There is no XML
//! library: a description or SOAP answer is searched for the elements it must have (by local
//! name, any namespace prefix), each of which must be well formed (closed by the same name,
//! no markup inside, only the five predefined entities).

use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4};

/// SSDP's multicast group and port (UDA 1.1 §1.3.2).
pub const SSDP_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);
/// The device type searched for (WANDevice's parent, UPnP IGD:1 §2.1; an IGD:2 device
/// answers searches for version 1 too, UDA 1.1 §1.3.2).
pub const IGD_DEVICE: &str = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";
/// The connection services that map ports, in the order they are preferred (IGD:2
/// WANIPConnection:2 §2.5, IGD:1 WANIPConnection:1 §2.4, WANPPPConnection:1 §2.4).
pub const WAN_SERVICES: [&str; 3] = [
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
];

/// Longest SSDP answer read (UDA 1.1 §1.3.3 answers are a few hundred bytes).
pub const MAX_SSDP: usize = 2048;
/// Longest HTTP header block (status line and headers) accepted.
pub const MAX_HTTP_HEAD: usize = 8 * 1024;
/// Longest HTTP body accepted: a gateway's root description is a few KiB (miniupnpd's is
/// ~4 KiB; vendors' run to ~20 KiB), a SOAP answer well under one.
pub const MAX_HTTP_BODY: usize = 64 * 1024;
/// Longest URL path accepted (LOCATION, URLBase, controlURL).
pub const MAX_PATH: usize = 512;
/// Most headers in one HTTP or SSDP message.
const MAX_HEADERS: usize = 64;
/// Longest text of one XML element read (a serviceType, a controlURL, an IP address...).
const MAX_TEXT: usize = 512;

/// Why a gateway's UPnP message could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgdError {
    /// Over its size cap.
    TooLong,
    /// Not the syntax it must have (status line, header, chunk, URL, element).
    Malformed(&'static str),
    /// Well formed, but not what is needed (no LOCATION, no WAN connection service, not on
    /// the gateway, an unsupported scheme).
    Unusable(&'static str),
}

impl fmt::Display for IgdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => f.write_str("too long"),
            Self::Malformed(what) => write!(f, "malformed {what}"),
            Self::Unusable(what) => write!(f, "unusable: {what}"),
        }
    }
}

type Result<T> = std::result::Result<T, IgdError>;

// ---- SSDP ---------------------------------------------------------------------------------

/// An SSDP M-SEARCH for [`IGD_DEVICE`] (UDA 1.1 §1.3.2): to the multicast group with `MX`
/// (seconds the device may wait; 1, the smallest allowed), or unicast to `unicast` (the
/// gateway's port 1900: `HOST` names it and there is no `MX`, §1.3.2 "unicast search").
/// Returns the length written, `None` if `buf` is too small.
pub fn encode_msearch(buf: &mut [u8], unicast: Option<SocketAddrV4>) -> Option<usize> {
    let mut s = String::with_capacity(160);
    let host = unicast.unwrap_or(SSDP_GROUP);
    // (Writing to a String cannot fail.)
    let _ = write!(
        s,
        "M-SEARCH * HTTP/1.1\r\nHOST: {host}\r\nMAN: \"ssdp:discover\"\r\n"
    );
    if unicast.is_none() {
        s.push_str("MX: 1\r\n");
    }
    let _ = write!(s, "ST: {IGD_DEVICE}\r\n\r\n");
    let out = buf.get_mut(..s.len())?;
    out.copy_from_slice(s.as_bytes());
    Some(s.len())
}

/// Whether a datagram looks like an HTTPU answer (an SSDP search answer starts so; Pierce's
/// own datagrams and STUN never do).
pub fn is_httpu(datagram: &[u8]) -> bool {
    datagram.starts_with(b"HTTP/1.")
}

/// An SSDP search answer (UDA 1.1 §1.3.3): `HTTP/1.1 200 OK` with a `LOCATION` (the root
/// description's URL) and an `ST`. Returns LOCATION.
///
/// # Errors
/// Over [`MAX_SSDP`], malformed, not 200, no (or two) LOCATION, or an `ST` that is neither
/// the IGD device type (any version) nor a WAN connection service.
pub fn parse_ssdp_response(datagram: &[u8]) -> Result<&str> {
    if datagram.len() > MAX_SSDP {
        return Err(IgdError::TooLong);
    }
    let text = std::str::from_utf8(datagram).map_err(|_| IgdError::Malformed("ssdp text"))?;
    let end = text
        .find("\r\n\r\n")
        .ok_or(IgdError::Malformed("ssdp end"))?;
    let mut lines = text[..end].split("\r\n");
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    if status != 200 {
        return Err(IgdError::Unusable("ssdp status"));
    }
    let (mut location, mut st) = (None, None);
    for (i, line) in lines.enumerate() {
        if i >= MAX_HEADERS {
            return Err(IgdError::TooLong);
        }
        let (name, value) = parse_header(line)?;
        let slot = if name.eq_ignore_ascii_case("location") {
            &mut location
        } else if name.eq_ignore_ascii_case("st") {
            &mut st
        } else {
            continue;
        };
        if slot.replace(value).is_some() {
            return Err(IgdError::Malformed("repeated ssdp header"));
        }
    }
    if let Some(st) = st {
        let igd = st
            .strip_prefix("urn:schemas-upnp-org:device:InternetGatewayDevice:")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
        if !igd && !WAN_SERVICES.contains(&st) {
            return Err(IgdError::Unusable("ssdp search target"));
        }
    }
    location.ok_or(IgdError::Unusable("no LOCATION"))
}

// ---- URLs ---------------------------------------------------------------------------------

/// An `http://` URL whose host is an IPv4 literal (what an IGD's LOCATION and controlURL
/// are: UDA 1.1 §1.3.3, §2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// The host and port (80 when the URL has none).
    pub addr: SocketAddrV4,
    /// The absolute path (and query), starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses `http://a.b.c.d[:port][/path]`. A host name, another scheme, userinfo, a
    /// fragment or a character outside visible ASCII is an error.
    ///
    /// # Errors
    /// As above, or a path over [`MAX_PATH`].
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .map(|_| &url[7..])
            .ok_or(IgdError::Unusable("not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, parse_port(p)?),
            None => (authority, 80),
        };
        let ip: Ipv4Addr = host
            .parse()
            .map_err(|_| IgdError::Unusable("URL host is not an IPv4 address"))?;
        Ok(Self {
            addr: SocketAddrV4::new(ip, port),
            path: check_path(path)?.to_owned(),
        })
    }

    /// `reference` resolved against this URL (RFC 3986 §5.2, the cases a description has:
    /// an absolute `http://` URL, an absolute path, or a path relative to this one's
    /// directory).
    ///
    /// # Errors
    /// `reference` is malformed (see [`HttpUrl::parse`]) or empty.
    pub fn join(&self, reference: &str) -> Result<Self> {
        if reference
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        {
            return Self::parse(reference);
        }
        if reference.is_empty() || reference.contains("://") {
            return Err(IgdError::Malformed("relative URL"));
        }
        let path = if reference.starts_with('/') {
            reference.to_owned()
        } else {
            let dir = self.path.rfind('/').map_or("/", |i| &self.path[..=i]);
            format!("{dir}{reference}")
        };
        check_path(&path)?;
        Ok(Self {
            addr: self.addr,
            path,
        })
    }
}

fn parse_port(p: &str) -> Result<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IgdError::Malformed("URL port"));
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(IgdError::Malformed("URL port")),
        Ok(port) => Ok(port),
    }
}

fn check_path(path: &str) -> Result<&str> {
    if path.len() > MAX_PATH {
        return Err(IgdError::TooLong);
    }
    let ok = path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
    if ok {
        Ok(path)
    } else {
        Err(IgdError::Malformed("URL path"))
    }
}

// ---- HTTP ---------------------------------------------------------------------------------

/// `GET path` for the root description (UDA 1.1 §2.1). `Connection: close`: one request per
/// stream, and the stream's end also ends a body without a length.
pub fn http_get(url: &HttpUrl) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: pierce UPnP/1.1\r\n\r\n",
        url.path, url.addr
    )
    .into_bytes()
}

/// A complete HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Its status code.
    pub status: u16,
    /// Its body (de-chunked).
    pub body: Vec<u8>,
}

/// Parses what a stream has delivered so far: `Ok(None)` while the response is incomplete
/// (`eof`: the stream has ended, which completes a body that has no length, RFC 7230
/// §3.3.3 item 7), `Ok(Some)` once whole. Bytes after a complete response are ignored.
///
/// # Errors
/// A head over [`MAX_HTTP_HEAD`], a body over [`MAX_HTTP_BODY`], malformed syntax, a
/// transfer coding other than chunked, or an end of stream before the response is whole.
pub fn parse_http_response(bytes: &[u8], eof: bool) -> Result<Option<HttpResponse>> {
    let Some(head_len) = find(bytes, b"\r\n\r\n") else {
        if bytes.len() > MAX_HTTP_HEAD {
            return Err(IgdError::TooLong);
        }
        return if eof {
            Err(IgdError::Malformed("http head cut short"))
        } else {
            Ok(None)
        };
    };
    if head_len > MAX_HTTP_HEAD {
        return Err(IgdError::TooLong);
    }
    let head =
        std::str::from_utf8(&bytes[..head_len]).map_err(|_| IgdError::Malformed("http head"))?;
    let mut lines = head.split("\r\n");
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    let (mut length, mut chunked) = (None, false);
    for (i, line) in lines.enumerate() {
        if i >= MAX_HEADERS {
            return Err(IgdError::TooLong);
        }
        let (name, value) = parse_header(line)?;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_decimal(value).ok_or(IgdError::Malformed("Content-Length"))?;
            if length.replace(n).is_some_and(|m| m != n) {
                return Err(IgdError::Malformed("Content-Length"));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return Err(IgdError::Unusable("transfer coding"));
            }
            chunked = true;
        }
    }
    let body = &bytes[head_len + 4..];
    if chunked {
        // RFC 7230 §3.3.3 item 3: chunked wins over a Content-Length.
        return match dechunk(body)? {
            Some(body) => Ok(Some(HttpResponse { status, body })),
            None if eof => Err(IgdError::Malformed("chunked body cut short")),
            None => Ok(None),
        };
    }
    match length {
        Some(n) if n > MAX_HTTP_BODY => Err(IgdError::TooLong),
        Some(n) if body.len() >= n => Ok(Some(HttpResponse {
            status,
            body: body[..n].to_vec(),
        })),
        Some(_) if eof => Err(IgdError::Malformed("body cut short")),
        Some(_) => Ok(None),
        None if body.len() > MAX_HTTP_BODY => Err(IgdError::TooLong),
        None if eof => Ok(Some(HttpResponse {
            status,
            body: body.to_vec(),
        })),
        None => Ok(None),
    }
}

/// A chunked body (RFC 7230 §4.1), `None` until its last chunk and trailer end arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(rest, b"\r\n") else {
            return if rest.len() > 64 {
                Err(IgdError::Malformed("chunk size"))
            } else {
                Ok(None)
            };
        };
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| IgdError::Malformed("chunk"))?;
        // A chunk extension (";name=value") is allowed and ignored (§4.1.1).
        let size = line.split(';').next().unwrap_or_default().trim_end();
        if size.is_empty() || size.len() > 8 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IgdError::Malformed("chunk size"));
        }
        let size = usize::from_str_radix(size, 16).map_err(|_| IgdError::Malformed("chunk"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            // Trailer fields, each a line, until an empty line (§4.1.2).
            loop {
                let Some(eol) = find(rest, b"\r\n") else {
                    return Ok(None);
                };
                if eol == 0 {
                    return Ok(Some(body));
                }
                if eol > MAX_HTTP_HEAD {
                    return Err(IgdError::TooLong);
                }
                rest = &rest[eol + 2..];
            }
        }
        if body.len().saturating_add(size) > MAX_HTTP_BODY {
            return Err(IgdError::TooLong);
        }
        if rest.len() < size.saturating_add(2) {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(IgdError::Malformed("chunk end"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// `HTTP/1.x NNN reason` (RFC 7230 §3.1.2): the status code.
fn parse_status_line(line: &str) -> Result<u16> {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .ok_or(IgdError::Malformed("status line"))?;
    let code = rest.get(..3).ok_or(IgdError::Malformed("status code"))?;
    let after = &rest[3..];
    if !code.bytes().all(|b| b.is_ascii_digit()) || !(after.is_empty() || after.starts_with(' ')) {
        return Err(IgdError::Malformed("status code"));
    }
    code.parse()
        .ok()
        .filter(|c| (100..600).contains(c))
        .ok_or(IgdError::Malformed("status code"))
}

/// `name: value` (RFC 7230 §3.2; no obsolete line folding): the name and the trimmed value.
fn parse_header(line: &str) -> Result<(&str, &str)> {
    let (name, value) = line.split_once(':').ok_or(IgdError::Malformed("header"))?;
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(IgdError::Malformed("header name"));
    }
    let value = value.trim_matches([' ', '\t']);
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(IgdError::Malformed("header value"));
    }
    Ok((name, value))
}

fn parse_decimal(s: &str) -> Option<usize> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---- The description ----------------------------------------------------------------------

/// Where to send a WAN connection service's SOAP actions (UDA 1.1 §2.3 `<service>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPoint {
    /// The service type, one of [`WAN_SERVICES`] (SOAPAction and the action's namespace).
    pub service: &'static str,
    /// Its controlURL, resolved against `URLBase` or the description's own URL.
    pub url: HttpUrl,
}

/// Finds the preferred WAN connection service ([`WAN_SERVICES`] order) in a root device
/// description fetched from `location` (UDA 1.1 §2.3), and its control URL.
///
/// # Errors
/// Over [`MAX_HTTP_BODY`], not UTF-8, a malformed `<service>` (its serviceType or controlURL
/// missing, repeated or malformed), a malformed URLBase, or no WAN connection service.
pub fn parse_description(xml: &[u8], location: &HttpUrl) -> Result<ControlPoint> {
    if xml.len() > MAX_HTTP_BODY {
        return Err(IgdError::TooLong);
    }
    let doc = std::str::from_utf8(xml).map_err(|_| IgdError::Malformed("description text"))?;
    if !doc.contains("<root") {
        return Err(IgdError::Malformed("description root"));
    }
    let base = match element_text(doc, "URLBase")? {
        Some(b) if !b.is_empty() => HttpUrl::parse(&b)?,
        _ => location.clone(),
    };
    let mut best: Option<(usize, String)> = None;
    let mut rest = doc;
    while let Some((service, after)) = element_body(rest, "service")? {
        rest = after;
        let kind = element_text(service, "serviceType")?
            .ok_or(IgdError::Malformed("service without serviceType"))?;
        let Some(rank) = WAN_SERVICES.iter().position(|s| *s == kind) else {
            continue;
        };
        let control = element_text(service, "controlURL")?
            .ok_or(IgdError::Malformed("service without controlURL"))?;
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            best = Some((rank, control));
        }
    }
    let (rank, control) = best.ok_or(IgdError::Unusable("no WAN connection service"))?;
    Ok(ControlPoint {
        service: WAN_SERVICES[rank],
        url: base.join(&control)?,
    })
}

/// The body of the first element named `local` (any prefix, any attributes) in `doc`, and
/// what follows its end tag; `None` if there is none. `<local/>` has an empty body.
fn element_body<'a>(doc: &'a str, local: &str) -> Result<Option<(&'a str, &'a str)>> {
    let mut from = 0;
    while let Some(i) = doc[from..].find('<') {
        let start = from + i + 1;
        let tag_end = doc[start..]
            .find('>')
            .map(|j| start + j)
            .ok_or(IgdError::Malformed("tag"))?;
        let tag = &doc[start..tag_end];
        from = tag_end + 1;
        let name = tag
            .split([' ', '\t', '\r', '\n', '/'])
            .next()
            .unwrap_or_default();
        if local_name(name) != local || tag.starts_with('/') {
            continue;
        }
        if tag.ends_with('/') {
            return Ok(Some(("", &doc[from..])));
        }
        // The matching end tag: the next end tag of this name (the elements searched for
        // never nest in themselves).
        let mut search = from;
        loop {
            let j = doc[search..]
                .find("</")
                .map(|j| search + j)
                .ok_or(IgdError::Malformed("element not closed"))?;
            let k = doc[j..]
                .find('>')
                .map(|k| j + k)
                .ok_or(IgdError::Malformed("end tag"))?;
            let end_name = doc[j + 2..k].trim_end();
            if end_name == name {
                return Ok(Some((&doc[from..j], &doc[k + 1..])));
            }
            search = k + 1;
        }
    }
    Ok(None)
}

/// The text of the first element named `local` in `doc` (trimmed, entities decoded), if
/// there is one; an element that holds markup, or text over [`MAX_TEXT`], is an error.
fn element_text(doc: &str, local: &str) -> Result<Option<String>> {
    let Some((body, _)) = element_body(doc, local)? else {
        return Ok(None);
    };
    let body = body.trim();
    if body.len() > MAX_TEXT {
        return Err(IgdError::TooLong);
    }
    if body.contains('<') || body.contains('>') {
        return Err(IgdError::Malformed("element text"));
    }
    unescape(body).map(Some)
}

/// `prefix:name` → `name`.
fn local_name(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, l)| l)
}

/// XML's five predefined entities (XML 1.0 §4.6); any other reference is an error.
fn unescape(text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (c, n) = [
            ("&amp;", '&'),
            ("&lt;", '<'),
            ("&gt;", '>'),
            ("&quot;", '"'),
            ("&apos;", '\''),
        ]
        .iter()
        .find(|(e, _)| tail.starts_with(e))
        .map(|(e, c)| (*c, e.len()))
        .ok_or(IgdError::Malformed("entity"))?;
        out.push(c);
        rest = &tail[n..];
    }
    out.push_str(rest);
    Ok(out)
}

// ---- SOAP ---------------------------------------------------------------------------------

/// A WAN connection service action this client sends (WANIPConnection:1 §2.4.16, §2.4.17,
/// §2.4.18; WANIPConnection:2 §2.5.16, §2.5.18, §2.5.20; WANPPPConnection:1 has the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `GetExternalIPAddress`.
    GetExternalIp,
    /// `AddPortMapping` of UDP `external` → `internal`, for `lease` seconds (0: permanent).
    Add {
        /// NewExternalPort.
        external: u16,
        /// NewInternalClient and NewInternalPort.
        internal: SocketAddrV4,
        /// NewLeaseDuration.
        lease: u32,
    },
    /// `DeletePortMapping` of UDP `external`.
    Delete {
        /// NewExternalPort.
        external: u16,
    },
}

impl Action {
    /// The action's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::GetExternalIp => "GetExternalIPAddress",
            Self::Add { .. } => "AddPortMapping",
            Self::Delete { .. } => "DeletePortMapping",
        }
    }
}

/// The description every mapping carries (NewPortMappingDescription).
pub const MAPPING_DESCRIPTION: &str = "pierce";

/// The HTTP POST carrying `action` to `control` (UDA 1.1 §3.2.1: `SOAPAction` names the
/// service and action; the body is a SOAP 1.1 envelope whose one element is the action, in
/// the service's namespace, with its arguments in order).
pub fn soap_request(control: &ControlPoint, action: Action) -> Vec<u8> {
    let service = control.service;
    let name = action.name();
    let mut args = String::new();
    match action {
        Action::GetExternalIp => {}
        Action::Add {
            external,
            internal,
            lease,
        } => {
            let _ = write!(
                args,
                "<NewRemoteHost></NewRemoteHost><NewExternalPort>{external}</NewExternalPort>\
                 <NewProtocol>UDP</NewProtocol><NewInternalPort>{}</NewInternalPort>\
                 <NewInternalClient>{}</NewInternalClient><NewEnabled>1</NewEnabled>\
                 <NewPortMappingDescription>{MAPPING_DESCRIPTION}</NewPortMappingDescription>\
                 <NewLeaseDuration>{lease}</NewLeaseDuration>",
                internal.port(),
                internal.ip()
            );
        }
        Action::Delete { external } => {
            let _ = write!(
                args,
                "<NewRemoteHost></NewRemoteHost><NewExternalPort>{external}</NewExternalPort>\
                 <NewProtocol>UDP</NewProtocol>"
            );
        }
    }
    let body = format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
         <u:{name} xmlns:u=\"{service}\">{args}</u:{name}></s:Body></s:Envelope>\r\n"
    );
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n\
         SOAPAction: \"{service}#{name}\"\r\nContent-Length: {}\r\nConnection: close\r\n\
         User-Agent: pierce UPnP/1.1\r\n\r\n",
        control.url.path,
        control.url.addr,
        body.len()
    );
    req.push_str(&body);
    req.into_bytes()
}

/// What a SOAP answer says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoapAnswer {
    /// The action succeeded; for `GetExternalIPAddress`, with the address.
    Ok(Option<Ipv4Addr>),
    /// A `UPnPError` fault (UDA 1.1 §3.2.2): its errorCode (e.g. 718
    /// ConflictInMappingEntry, 725 OnlyPermanentLeasesSupported, 606 Action not authorized).
    Fault(u16),
}

/// Reads a SOAP answer to `action` (UDA 1.1 §3.2.2): a 200 whose body holds the
/// `<action>Response` element (and, for `GetExternalIPAddress`, a valid non-zero
/// `NewExternalIPAddress`), or a 500 whose body holds a `UPnPError` with its `errorCode`.
///
/// # Errors
/// Any other status, a body that is not UTF-8 or lacks what it must hold, an address that
/// is not an IPv4 one (or is 0.0.0.0: no external address yet), an errorCode that is not a
/// number.
pub fn parse_soap_response(response: &HttpResponse, action: Action) -> Result<SoapAnswer> {
    let body = std::str::from_utf8(&response.body).map_err(|_| IgdError::Malformed("soap text"))?;
    match response.status {
        200 => {
            let name = format!("{}Response", action.name());
            if element_body(body, &name)?.is_none() {
                return Err(IgdError::Malformed("soap response element"));
            }
            if action != Action::GetExternalIp {
                return Ok(SoapAnswer::Ok(None));
            }
            let ip = element_text(body, "NewExternalIPAddress")?
                .ok_or(IgdError::Malformed("no NewExternalIPAddress"))?;
            let ip: Ipv4Addr = ip
                .parse()
                .map_err(|_| IgdError::Malformed("NewExternalIPAddress"))?;
            if ip.is_unspecified() {
                return Err(IgdError::Unusable("no external address yet"));
            }
            Ok(SoapAnswer::Ok(Some(ip)))
        }
        500 => {
            let (fault, _) =
                element_body(body, "UPnPError")?.ok_or(IgdError::Malformed("soap fault"))?;
            let code =
                element_text(fault, "errorCode")?.ok_or(IgdError::Malformed("no errorCode"))?;
            let code = (code.len() <= 5)
                .then(|| code.parse::<u16>().ok())
                .flatten()
                .filter(|_| code.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(IgdError::Malformed("errorCode"))?;
            Ok(SoapAnswer::Fault(code))
        }
        _ => Err(IgdError::Unusable("http status")),
    }
}

#[cfg(test)]
mod tests;
