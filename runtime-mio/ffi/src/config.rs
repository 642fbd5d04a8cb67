//! Configuration structs: filled with defaults by `pierce_*_config_default`, changed field by
//! field by the caller, read once by `*_new`.

use std::sync::Arc;
use std::time::Duration;

use pierce_core::{
    Channel, ChannelConfig, ClientConfig, Delivery, PublicKey, RoomsConfig, SecretKey, SendOptions,
    ServerConfig, Transport,
};

use crate::error::{PierceResult, Result, err, guard};
use crate::types::{Out, flag, read, read_bytes};

use PierceResult::*;

/// How a channel delivers (`PierceChannelConfig`'s `delivery`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceDelivery {
    /// Every message, exactly once, in send order.
    PIERCE_DELIVERY_RELIABLE_ORDERED = 0,
    /// Every message, exactly once, as soon as it arrives.
    PIERCE_DELIVERY_RELIABLE_UNORDERED = 1,
    /// Only the newest message matters; delivered reliably unless superseded.
    PIERCE_DELIVERY_RELIABLE_SEQUENCED = 2,
    /// Best effort, an older message never after a newer one; only the newest waits to be sent.
    PIERCE_DELIVERY_UNRELIABLE_SEQUENCED = 3,
    /// Best effort, any order.
    PIERCE_DELIVERY_UNRELIABLE = 4,
}

/// The default channels: channel `i` has delivery mode `i` (`PIERCE_DELIVERY_*`), so with the
/// default configuration the channel number *is* the delivery mode.
pub const PIERCE_CHANNEL_RELIABLE_ORDERED: u8 = 0;
/// Default channel 1: reliable, unordered.
pub const PIERCE_CHANNEL_RELIABLE_UNORDERED: u8 = 1;
/// Default channel 2: reliable, newest only.
pub const PIERCE_CHANNEL_RELIABLE_SEQUENCED: u8 = 2;
/// Default channel 3: unreliable, newest only.
pub const PIERCE_CHANNEL_UNRELIABLE_SEQUENCED: u8 = 3;
/// Default channel 4: unreliable.
pub const PIERCE_CHANNEL_UNRELIABLE: u8 = 4;

/// One channel of every peer connection (`PierceClientConfig`'s `channels`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PierceChannelConfig {
    /// A `PierceDelivery`.
    pub delivery: u8,
    /// Higher goes first when a packet is filled; equal priorities share round-robin.
    pub priority: u8,
}

/// How a client reaches its server (`PierceClientConfig`'s `transport`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceTransport {
    /// UDP, with a TCP stream as fallback when UDP gets no answer (default).
    PIERCE_TRANSPORT_AUTO = 0,
    /// UDP only.
    PIERCE_TRANSPORT_UDP = 1,
    /// TCP only.
    PIERCE_TRANSPORT_TCP = 2,
}

/// Client settings. Fill with `pierce_client_config_default`, then change fields. Flags are 0
/// or 1 (anything else is `PIERCE_INVALID_ARGUMENT`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PierceClientConfig {
    /// 1: the server must prove it holds the secret key of `server_key` (else the connection
    /// fails with `PIERCE_DISCONNECT_SERVER_KEY_MISMATCH`). 0 (default): any key, reported in
    /// `CONNECTED` (trust on first use).
    pub pin_server_key: u8,
    /// The server's public key (with `pin_server_key`).
    pub server_key: [u8; 32],
    /// 1 (default): try direct paths to peers (hole punching); 0: every peer on the relay.
    pub direct_paths: u8,
    /// 1: IP privacy: no peer ever learns this client's addresses (everything relayed).
    /// Default 0.
    pub ip_private: u8,
    /// 1 (default): classify this client's NAT against the server once connected.
    pub nat_discovery: u8,
    /// 1 (default): register again by itself after the server session times out or resets.
    pub reregister: u8,
    /// A `PierceTransport` (default `PIERCE_TRANSPORT_AUTO`).
    pub transport: u8,
    /// Extra local sockets for birthday probing (0 turns it off; default 256; at most 1024).
    /// With the sans-IO layer, the caller opens them (socket requests).
    pub birthday_sockets: u16,
    /// Keepalive after this long without sending (default 2000).
    pub keepalive_interval_ms: u32,
    /// The server is lost after this long without an authentic packet (default 15000).
    pub idle_timeout_ms: u32,
    /// Give up connecting after this long (default 10000).
    pub connect_timeout_ms: u32,
    /// How long direct pairs outlive a lost server session (default 600000; 0: never).
    pub pair_lifetime_ms: u32,
    /// Largest reliable message, sent or accepted (default 1 MiB).
    pub max_message_size: u32,
    /// How many entries `channels` has; 0 (default): the five default channels (channel `i`
    /// has `PierceDelivery` `i`).
    pub channel_count: u32,
    /// The channels (read during `*_new` only), or NULL with `channel_count` 0. Every client
    /// of a session must use the same list.
    pub channels: *const PierceChannelConfig,
}

/// Server settings. Fill with `pierce_server_config_default` (which draws a fresh secret key
/// from the OS), then change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PierceServerConfig {
    /// The server's long-term identity (X25519 secret). Keep it to keep the public key clients
    /// pin (`pierce_public_key`).
    pub secret_key: [u8; 32],
    /// 1 (default): the rooms policy (named rooms clients create and join). 0: no rooms;
    /// the application manages groups itself.
    pub rooms: u8,
    /// 1: every room is relay-only (IP privacy). Default 0.
    pub relay_only_rooms: u8,
    /// Rooms at most (default 10000).
    pub max_rooms: u32,
    /// Member limit of a room whose creator asked for none (default 8).
    pub default_max_members: u16,
    /// Largest member limit a creator may ask for (default 64).
    pub max_members_cap: u16,
    /// Connected clients at most (default 100000).
    pub max_clients: u32,
    /// Keepalive to a client after this long without sending it anything (default 5000).
    pub keepalive_interval_ms: u32,
    /// Drop a client after this long without an authentic packet (default 15000).
    pub idle_timeout_ms: u32,
    /// Call a client offline after this long (default 5000; 0: off; below idle timeout).
    pub offline_after_ms: u32,
    /// If not NULL (and `token_secret_len` is not 0): clients must present a connect token
    /// issued with this secret (read during `*_new` only). Default: NULL, no tokens.
    pub token_secret: *const u8,
    /// How many bytes `token_secret` has.
    pub token_secret_len: usize,
}

/// Options of one `send` (NULL for the defaults: no deadline, no retry limit).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PierceSendOptions {
    /// Give up on a reliable message not acknowledged within this many milliseconds from now
    /// (then `PIERCE_CLIENT_EVENT_MESSAGE_EXPIRED`); 0: no deadline.
    pub timeout_ms: u32,
    /// Give up after this many retransmissions; negative: no limit.
    pub max_retransmits: i32,
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(v.into())
}

fn ms_of(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl PierceClientConfig {
    pub(crate) fn defaults() -> Self {
        let d = ClientConfig::default();
        Self {
            pin_server_key: 0,
            server_key: [0; 32],
            direct_paths: d.direct_paths.into(),
            ip_private: d.private.into(),
            nat_discovery: d.nat_discovery.into(),
            reregister: d.reregister.into(),
            transport: PierceTransport::PIERCE_TRANSPORT_AUTO as u8,
            birthday_sockets: d.birthday_sockets,
            keepalive_interval_ms: ms_of(d.keepalive_interval),
            idle_timeout_ms: ms_of(d.idle_timeout),
            connect_timeout_ms: ms_of(d.connect_timeout),
            pair_lifetime_ms: ms_of(d.pair_lifetime),
            max_message_size: u32::try_from(d.max_message_size).unwrap_or(u32::MAX),
            channel_count: 0,
            channels: std::ptr::null(),
        }
    }

    /// The core configuration (checked by the core's `validate` in `Client::new`).
    pub(crate) fn to_core(self) -> Result<ClientConfig> {
        let mut c = ClientConfig::default();
        if flag(self.pin_server_key, "pin_server_key")? {
            c.server_key = Some(PublicKey(self.server_key));
        }
        c.direct_paths = flag(self.direct_paths, "direct_paths")?;
        c.private = flag(self.ip_private, "ip_private")?;
        c.nat_discovery = flag(self.nat_discovery, "nat_discovery")?;
        c.reregister = flag(self.reregister, "reregister")?;
        c.transport = match self.transport {
            0 => Transport::Auto,
            1 => Transport::Udp,
            2 => Transport::Tcp,
            t => {
                return Err(err(
                    PIERCE_INVALID_ARGUMENT,
                    format!("transport is {t} (must be a PierceTransport: 0, 1 or 2)"),
                ));
            }
        };
        c.birthday_sockets = self.birthday_sockets;
        c.keepalive_interval = ms(self.keepalive_interval_ms);
        c.idle_timeout = ms(self.idle_timeout_ms);
        c.connect_timeout = ms(self.connect_timeout_ms);
        c.pair_lifetime = ms(self.pair_lifetime_ms);
        c.max_message_size = self.max_message_size as usize;
        // The buffers sized by the message size follow it when it grows past their defaults.
        c.max_reassembly_bytes = c.max_reassembly_bytes.max(c.max_message_size);
        c.max_send_buffer_per_peer = c.max_send_buffer_per_peer.max(c.max_message_size);
        if self.channel_count > 0 {
            let n = self.channel_count as usize;
            if self.channels.is_null() {
                return Err(err(
                    PIERCE_NULL_ARGUMENT,
                    format!("channels is NULL with channel_count {n}"),
                ));
            }
            // SAFETY: non-NULL; the caller promises `channel_count` entries.
            let list = unsafe { std::slice::from_raw_parts(self.channels, n) };
            c.channels = list
                .iter()
                .enumerate()
                .map(|(i, ch)| {
                    Ok(ChannelConfig {
                        delivery: delivery(ch.delivery, i)?,
                        priority: ch.priority,
                    })
                })
                .collect::<Result<_>>()?;
        }
        c.validate()?;
        Ok(c)
    }
}

fn delivery(d: u8, i: usize) -> Result<Delivery> {
    Ok(match d {
        0 => Delivery::ReliableOrdered,
        1 => Delivery::ReliableUnordered,
        2 => Delivery::ReliableSequenced,
        3 => Delivery::UnreliableSequenced,
        4 => Delivery::Unreliable,
        d => {
            return Err(err(
                PIERCE_INVALID_ARGUMENT,
                format!("channels[{i}].delivery is {d} (must be a PierceDelivery, 0 to 4)"),
            ));
        }
    })
}

impl PierceServerConfig {
    pub(crate) fn defaults(secret_key: [u8; 32]) -> Self {
        let d = ServerConfig::new(SecretKey::from_bytes(secret_key));
        let r = RoomsConfig::default();
        Self {
            secret_key,
            rooms: 1,
            relay_only_rooms: r.relay_only.into(),
            max_rooms: u32::try_from(r.max_rooms).unwrap_or(u32::MAX),
            default_max_members: r.default_max_members,
            max_members_cap: r.max_members_cap,
            max_clients: u32::try_from(d.max_clients).unwrap_or(u32::MAX),
            keepalive_interval_ms: ms_of(d.keepalive_interval),
            idle_timeout_ms: ms_of(d.idle_timeout),
            offline_after_ms: ms_of(d.offline_after),
            token_secret: std::ptr::null(),
            token_secret_len: 0,
        }
    }

    /// The core configuration, checked.
    pub(crate) fn to_core(self) -> Result<ServerConfig> {
        let mut c = ServerConfig::new(SecretKey::from_bytes(self.secret_key));
        if flag(self.rooms, "rooms")? {
            let mut r = RoomsConfig::default();
            r.relay_only = flag(self.relay_only_rooms, "relay_only_rooms")?;
            r.max_rooms = self.max_rooms as usize;
            r.default_max_members = self.default_max_members;
            r.max_members_cap = self.max_members_cap;
            c.rooms = Some(r);
        }
        c.max_clients = self.max_clients as usize;
        c.keepalive_interval = ms(self.keepalive_interval_ms);
        c.idle_timeout = ms(self.idle_timeout_ms);
        c.offline_after = ms(self.offline_after_ms);
        if !self.token_secret.is_null() && self.token_secret_len > 0 {
            c.token_secret = Some(
                read_bytes(self.token_secret, self.token_secret_len, "token_secret")?.to_vec(),
            );
        }
        c.validate()?;
        Ok(c)
    }
}

/// The client configuration at `p`, or the defaults for NULL.
pub(crate) fn client_config(p: *const PierceClientConfig) -> Result<Arc<ClientConfig>> {
    let c = if p.is_null() {
        ClientConfig::default()
    } else {
        read(p, "config")?.to_core()?
    };
    Ok(Arc::new(c))
}

/// The server configuration at `p` (required: it holds the key).
pub(crate) fn server_config(p: *const PierceServerConfig) -> Result<Arc<ServerConfig>> {
    Ok(Arc::new(read(p, "config")?.to_core()?))
}

/// The core's send options for `p` (NULL: defaults) at `now`.
pub(crate) fn send_options(
    p: *const PierceSendOptions,
    now: std::time::Instant,
) -> Result<SendOptions> {
    let mut o = SendOptions::default();
    if !p.is_null() {
        let opts = read(p, "options")?;
        if opts.timeout_ms > 0 {
            o.deadline = now.checked_add(ms(opts.timeout_ms));
        }
        o.max_retransmits = u32::try_from(opts.max_retransmits).ok();
    }
    Ok(o)
}

/// A channel number.
pub(crate) fn channel(c: u8) -> Channel {
    Channel(c)
}

// ---- extern "C" ----------------------------------------------------------------------------

/// Fills `*out` with the default client settings.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_config_default(
    out: *mut PierceClientConfig,
) -> PierceResult {
    guard(|| {
        Out::new(out, "out")?.write(PierceClientConfig::defaults());
        Ok(PIERCE_OK)
    })
}

/// Fills `*out` with the default server settings and a fresh secret key from the OS
/// (`PIERCE_IO` if the OS has no entropy to give).
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_config_default(
    out: *mut PierceServerConfig,
) -> PierceResult {
    guard(|| {
        let out = Out::new(out, "out")?;
        let key = pierce_mio::os_seed().map_err(|e| err(PIERCE_IO, format!("OS entropy: {e}")))?;
        out.write(PierceServerConfig::defaults(key));
        Ok(PIERCE_OK)
    })
}

/// Writes 32 fresh secret-key bytes from the OS to `out` (for `PierceServerConfig`'s
/// `secret_key`; save them to keep the server's identity across restarts).
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_secret_key_generate(out: *mut u8) -> PierceResult {
    guard(|| {
        let out = Out::new(out.cast::<[u8; 32]>(), "out")?;
        let key = pierce_mio::os_seed().map_err(|e| err(PIERCE_IO, format!("OS entropy: {e}")))?;
        out.write(SecretKey::from_bytes(key).to_bytes());
        Ok(PIERCE_OK)
    })
}

/// Writes the public key (32 bytes) of the 32-byte secret key `secret` to `out`: what clients
/// pin (`PierceClientConfig`'s `server_key`).
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_public_key(secret: *const u8, out: *mut u8) -> PierceResult {
    guard(|| {
        let out = Out::new(out.cast::<[u8; 32]>(), "out")?;
        let secret = read(secret.cast::<[u8; 32]>(), "secret")?;
        out.write(SecretKey::from_bytes(secret).public_key().0);
        Ok(PIERCE_OK)
    })
}
