use super::*;
use rand::{Rng as _, SeedableRng as _};

fn gw_url(path: &str) -> HttpUrl {
    HttpUrl {
        addr: "192.168.1.1:5000".parse().unwrap(),
        path: path.to_owned(),
    }
}

/// What miniupnpd 2.3 answers an M-SEARCH with (UDA 1.1 §1.3.3).
const SSDP_OK: &str = "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n\
    ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
    USN: uuid:3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
    EXT:\r\nSERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\n\
    LOCATION: http://192.168.1.1:5000/rootDesc.xml\r\nOPT: \"http://schemas.upnp.org/upnp/1/0/\"; ns=01\r\n\
    01-NLS: 1\r\nBOOTID.UPNP.ORG: 1\r\nCONFIGID.UPNP.ORG: 1337\r\n\r\n";

/// A trimmed IGD:2 root description in miniupnpd's shape (UDA 1.1 §2.3): the WAN
/// connection service sits two embedded devices down.
const DESCRIPTION: &str = r#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0" configId="1337">
<specVersion><major>1</major><minor>1</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
<serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId><controlURL>/ctl/L3F</controlURL>
<eventSubURL>/evt/L3F</eventSubURL><SCPDURL>/L3F.xml</SCPDURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType>
<controlURL>/ctl/CmnIfCfg</controlURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:2</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><controlURL>/ctl/IPConn</controlURL>
<eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL></service>
</serviceList></device></deviceList></device></deviceList></device></root>"#;

#[test]
fn an_msearch_asks_for_the_igd_with_the_multicast_host_and_mx_or_unicast_without_mx() {
    // UDA 1.1 §1.3.2: HOST, MAN "ssdp:discover", MX (multicast only), ST.
    let mut buf = [0u8; 512];
    let n = encode_msearch(&mut buf, None).unwrap();
    let text = std::str::from_utf8(&buf[..n]).unwrap();
    assert_eq!(
        text,
        "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n\
         MX: 1\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n"
    );
    let n = encode_msearch(&mut buf, Some("192.168.1.1:1900".parse().unwrap())).unwrap();
    let text = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(text.contains("HOST: 192.168.1.1:1900\r\n") && !text.contains("MX"));
    assert_eq!(encode_msearch(&mut [0u8; 20], None), None, "too small");
}

#[test]
fn an_ssdp_answer_yields_its_location() {
    assert!(is_httpu(SSDP_OK.as_bytes()));
    assert_eq!(
        parse_ssdp_response(SSDP_OK.as_bytes()),
        Ok("http://192.168.1.1:5000/rootDesc.xml")
    );
    // Header names are case-insensitive (RFC 7230 §3.2); a service type answer is fine.
    let svc = "HTTP/1.1 200 OK\r\nlocation: http://10.0.0.1/d.xml\r\n\
               st: urn:schemas-upnp-org:service:WANIPConnection:1\r\n\r\n";
    assert_eq!(
        parse_ssdp_response(svc.as_bytes()),
        Ok("http://10.0.0.1/d.xml")
    );
}

#[test]
fn ssdp_answers_that_are_not_igd_answers_are_errors() {
    let bad: [&str; 8] = [
        "HTTP/1.1 404 Not Found\r\nLOCATION: http://10.0.0.1/\r\n\r\n",
        "HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nLOCATION: http://10.0.0.1/\r\nLOCATION: http://10.0.0.2/\r\n\r\n",
        "HTTP/1.1 200 OK\r\nLOCATION: http://10.0.0.1/\r\nST: upnp:rootdevice\r\n\r\n",
        "HTTP/1.1 200 OK\r\nLOCATION: http://10.0.0.1/\r\n",
        "HTTP/1.1 200 OK\r\nLOCATION http://10.0.0.1/\r\n\r\n",
        "NOTIFY * HTTP/1.1\r\nLOCATION: http://10.0.0.1/\r\n\r\n",
        "HTTP/1.1 200 OK\r\nLOCATION: http://10.0.0.1/\x01\r\n\r\n",
    ];
    for b in bad {
        assert!(parse_ssdp_response(b.as_bytes()).is_err(), "{b:?}");
    }
    let long = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_SSDP));
    assert_eq!(parse_ssdp_response(long.as_bytes()), Err(IgdError::TooLong));
}

#[test]
fn urls_are_http_on_an_ipv4_literal_and_join_like_rfc_3986() {
    let u = HttpUrl::parse("http://192.168.1.1:5000/rootDesc.xml").unwrap();
    assert_eq!(u, gw_url("/rootDesc.xml"));
    assert_eq!(
        HttpUrl::parse("HTTP://10.0.0.1").unwrap(),
        HttpUrl {
            addr: "10.0.0.1:80".parse().unwrap(),
            path: "/".into()
        }
    );
    for bad in [
        "https://10.0.0.1/",
        "http://router.lan/",
        "http://user@10.0.0.1/",
        "http://10.0.0.1:0/",
        "http://10.0.0.1:65536/",
        "http://10.0.0.1:/",
        "http://[::1]/",
        "http://10.0.0.1/a b",
        "http://10.0.0.1/#x",
        "http://10.0.0.1/é",
        "ftp://10.0.0.1/",
        "",
    ] {
        assert!(HttpUrl::parse(bad).is_err(), "{bad:?}");
    }
    let base = gw_url("/dev/rootDesc.xml");
    assert_eq!(base.join("/ctl/IPConn").unwrap(), gw_url("/ctl/IPConn"));
    assert_eq!(base.join("ctl/IPConn").unwrap(), gw_url("/dev/ctl/IPConn"));
    assert_eq!(
        base.join("http://10.9.9.9:1/x").unwrap().addr,
        "10.9.9.9:1".parse().unwrap()
    );
    assert!(base.join("").is_err());
    assert!(base.join("ftp://10.0.0.1/x").is_err());
    assert!(base.join("é://").is_err());
}

#[test]
fn http_responses_end_by_length_by_chunks_or_by_the_streams_end() {
    // RFC 7230 §3.3.3: Content-Length (item 5).
    let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA";
    assert_eq!(parse_http_response(&r[..30], false), Ok(None), "incomplete");
    let whole = parse_http_response(r, false).unwrap().unwrap();
    assert_eq!((whole.status, &whole.body[..]), (200, &b"hello"[..]));
    assert!(parse_http_response(&r[..40], true).is_err(), "cut short");
    // Chunked (§4.1), with an extension and a trailer; it wins over a length (item 3).
    let c = b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\
              Content-Length: 1\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n";
    for cut in [40, c.len() - 10, c.len() - 1] {
        assert_eq!(parse_http_response(&c[..cut], false), Ok(None), "{cut}");
    }
    let whole = parse_http_response(c, false).unwrap().unwrap();
    assert_eq!((whole.status, &whole.body[..]), (500, &b"abcde"[..]));
    // No length: the stream's end ends the body (item 7).
    let e = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n<root/>";
    assert_eq!(parse_http_response(e, false), Ok(None));
    assert_eq!(
        parse_http_response(e, true).unwrap().unwrap().body,
        b"<root/>"
    );
}

#[test]
fn malformed_or_oversized_http_responses_are_errors() {
    let bad: [&[u8]; 9] = [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 999 X\r\n\r\n",
        b"HTTP/1.1 200OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
    ];
    for b in bad {
        assert!(
            parse_http_response(b, true).is_err(),
            "{:?}",
            String::from_utf8_lossy(b)
        );
    }
    let huge = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        MAX_HTTP_BODY + 1
    );
    assert_eq!(
        parse_http_response(huge.as_bytes(), false),
        Err(IgdError::TooLong)
    );
    let head = vec![b'a'; MAX_HTTP_HEAD + 1];
    assert_eq!(parse_http_response(&head, false), Err(IgdError::TooLong));
    assert!(
        parse_http_response(b"HTTP/1.1 200 OK\r\n", true).is_err(),
        "head cut short"
    );
}

#[test]
fn the_description_yields_the_wan_ip_connection_control_url_on_the_gateway() {
    // UDA 1.1 §2.3: serviceType and controlURL of each <service>, resolved (§2.3 URLBase
    // absent: relative to the description's URL).
    let c = parse_description(DESCRIPTION.as_bytes(), &gw_url("/rootDesc.xml")).unwrap();
    assert_eq!(c.service, "urn:schemas-upnp-org:service:WANIPConnection:2");
    assert_eq!(c.url, gw_url("/ctl/IPConn"));
}

#[test]
fn the_description_prefers_ip_over_ppp_and_honours_url_base_and_entities() {
    let doc = "<root><URLBase>http://192.168.1.1:49000/</URLBase><device><serviceList>\
        <service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType>\
        <controlURL>/ppp</controlURL></service>\
        <service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>\
        <controlURL> upnp/control?a=1&amp;b=2 </controlURL></service>\
        </serviceList></device></root>";
    let c = parse_description(doc.as_bytes(), &gw_url("/desc.xml")).unwrap();
    assert_eq!(c.service, "urn:schemas-upnp-org:service:WANIPConnection:1");
    assert_eq!(c.url.addr, "192.168.1.1:49000".parse().unwrap());
    assert_eq!(c.url.path, "/upnp/control?a=1&b=2");
    let ppp_only = doc.replace("WANIPConnection:1", "WANIPv6FirewallControl:1");
    let c = parse_description(ppp_only.as_bytes(), &gw_url("/")).unwrap();
    assert_eq!(c.service, "urn:schemas-upnp-org:service:WANPPPConnection:1");
    assert_eq!(c.url.path, "/ppp");
}

#[test]
fn descriptions_without_a_usable_wan_service_are_errors() {
    let svc =
        |body: &str| format!("<root><serviceList><service>{body}</service></serviceList></root>");
    let ip1 = "<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>";
    let bad = [
        "no root".to_owned(),
        svc("<serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>"),
        svc(ip1),
        svc(&format!("{ip1}<controlURL>/a<b>x</b></controlURL>")),
        svc(&format!("{ip1}<controlURL>/a&nbsp;</controlURL>")),
        svc(&format!("{ip1}<controlURL>ftp://x/</controlURL>")),
        svc(&format!("{ip1}<controlURL>/a")),
        "<root><URLBase>https://x/</URLBase></root>".to_owned(),
        format!(
            "<root><service>{ip1}<controlURL>{}</controlURL></service></root>",
            "/a".repeat(300)
        ),
    ];
    for doc in bad {
        assert!(
            parse_description(doc.as_bytes(), &gw_url("/")).is_err(),
            "{doc}"
        );
    }
    let big = format!("<root>{}</root>", " ".repeat(MAX_HTTP_BODY));
    assert_eq!(
        parse_description(big.as_bytes(), &gw_url("/")),
        Err(IgdError::TooLong)
    );
}

fn control() -> ControlPoint {
    ControlPoint {
        service: WAN_SERVICES[1],
        url: gw_url("/ctl/IPConn"),
    }
}

#[test]
fn soap_requests_name_the_service_and_action_and_carry_the_arguments_in_order() {
    // UDA 1.1 §3.2.1; WANIPConnection:1 §2.4.16 AddPortMapping's arguments.
    let add = Action::Add {
        external: 4000,
        internal: "192.168.1.10:4000".parse().unwrap(),
        lease: 7200,
    };
    let req = String::from_utf8(soap_request(&control(), add)).unwrap();
    let (head, body) = req.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("POST /ctl/IPConn HTTP/1.1\r\nHost: 192.168.1.1:5000\r\n"));
    assert!(head.contains(
        "SOAPAction: \"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping\"\r\n"
    ));
    assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
    assert!(body.contains(
        "<u:AddPortMapping xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\">\
         <NewRemoteHost></NewRemoteHost><NewExternalPort>4000</NewExternalPort>\
         <NewProtocol>UDP</NewProtocol><NewInternalPort>4000</NewInternalPort>\
         <NewInternalClient>192.168.1.10</NewInternalClient><NewEnabled>1</NewEnabled>\
         <NewPortMappingDescription>pierce</NewPortMappingDescription>\
         <NewLeaseDuration>7200</NewLeaseDuration></u:AddPortMapping>"
    ));
    let del =
        String::from_utf8(soap_request(&control(), Action::Delete { external: 4001 })).unwrap();
    assert!(del.contains("#DeletePortMapping\""));
    assert!(del.contains("<NewExternalPort>4001</NewExternalPort><NewProtocol>UDP</NewProtocol>"));
    let get = String::from_utf8(soap_request(&control(), Action::GetExternalIp)).unwrap();
    assert!(get.contains("<u:GetExternalIPAddress xmlns:u="));
}

fn response(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        body: body.as_bytes().to_vec(),
    }
}

/// A SOAP fault as UDA 1.1 §3.2.2 spells it.
fn fault(code: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring>\
         <detail><UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{code}</errorCode>\
         <errorDescription>x</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>"
    )
}

#[test]
fn soap_answers_and_faults_are_read() {
    let ip = "<s:Envelope><s:Body><u:GetExternalIPAddressResponse xmlns:u=\"x\">\
              <NewExternalIPAddress>192.0.3.10</NewExternalIPAddress>\
              </u:GetExternalIPAddressResponse></s:Body></s:Envelope>";
    assert_eq!(
        parse_soap_response(&response(200, ip), Action::GetExternalIp),
        Ok(SoapAnswer::Ok(Some(Ipv4Addr::new(192, 0, 3, 10))))
    );
    let add = Action::Delete { external: 1 };
    let ok = "<s:Body><u:DeletePortMappingResponse xmlns:u=\"x\"/></s:Body>";
    assert_eq!(
        parse_soap_response(&response(200, ok), add),
        Ok(SoapAnswer::Ok(None))
    );
    for code in [718, 725, 606] {
        assert_eq!(
            parse_soap_response(&response(500, &fault(&code.to_string())), add),
            Ok(SoapAnswer::Fault(code))
        );
    }
}

#[test]
fn soap_answers_that_say_nothing_usable_are_errors() {
    let get = Action::GetExternalIp;
    let ip = |v: &str| {
        format!(
            "<u:GetExternalIPAddressResponse><NewExternalIPAddress>{v}</NewExternalIPAddress>\
             </u:GetExternalIPAddressResponse>"
        )
    };
    let bad = [
        response(200, &ip("0.0.0.0")),
        response(200, &ip("fe80::1")),
        response(200, &ip("")),
        response(200, "<u:GetExternalIPAddressResponse/>"),
        response(200, "<u:AddPortMappingResponse/>"),
        response(500, &fault("7x")),
        response(500, &fault("999999")),
        response(500, "<s:Fault>no detail</s:Fault>"),
        response(404, "<u:GetExternalIPAddressResponse/>"),
        HttpResponse {
            status: 200,
            body: vec![0xff, 0xfe],
        },
    ];
    for r in bad {
        assert!(parse_soap_response(&r, get).is_err(), "{r:?}");
    }
}

/// Inputs that look like the real thing, cut and flipped at random positions.
fn mutations(rng: &mut rand::rngs::StdRng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(0..8) {
        match rng.random_range(0..4) {
            0 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v[i] = rng.random();
            }
            1 if !v.is_empty() => v.truncate(rng.random_range(0..v.len())),
            2 => {
                let i = rng.random_range(0..=v.len());
                let junk: Vec<u8> = (0..rng.random_range(1..16))
                    .map(|_| *b"<>/&;:\r\n 0aF".get(rng.random_range(0..13)).unwrap_or(&0))
                    .collect();
                v.splice(i..i, junk);
            }
            _ => {
                let n = rng.random_range(0..64);
                v.extend((0..n).map(|_| rng.random::<u8>()));
            }
        }
    }
    v
}

#[test]
fn arbitrary_bytes_never_panic_any_parser() {
    let seeds: [&[u8]; 6] = [
        SSDP_OK.as_bytes(),
        DESCRIPTION.as_bytes(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
        b"<u:GetExternalIPAddressResponse><NewExternalIPAddress>1.2.3.4</NewExternalIPAddress></u:GetExternalIPAddressResponse>",
        b"<UPnPError><errorCode>718</errorCode></UPnPError>",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_16d0);
    let base = gw_url("/d.xml");
    for i in 0..20_000 {
        let input = mutations(&mut rng, seeds[i % seeds.len()]);
        let _ = parse_ssdp_response(&input);
        let _ = parse_http_response(&input, i % 2 == 0);
        let _ = parse_description(&input, &base);
        if let Ok(text) = std::str::from_utf8(&input) {
            let _ = HttpUrl::parse(text);
            let _ = base.join(text);
        }
        for status in [200, 500] {
            let r = HttpResponse {
                status,
                body: input.clone(),
            };
            let _ = parse_soap_response(&r, Action::GetExternalIp);
        }
    }
}
