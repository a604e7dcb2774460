//! Redis 7.0's cluster bus messages (`clusterMsg`): a 2256-byte header, then a body that
//! depends on the type. All integers are big-endian.
//!
//! A link's byte stream is cut with [`frame_len`] / [`next_frame`] (an error there means
//! the stream is lost: close the link), and each frame goes to [`decode`] (an error there
//! concerns that message only: Redis logs and drops it, and keeps the link). [`encode`]
//! writes the bytes Redis 7.0.15 writes, reserved and padding bytes zero: real captures
//! re-encode byte for byte (`tests/bus_vectors.rs`).

/// A node id: 40 lowercase hex characters.
pub type NodeId = [u8; 40];

/// The slot bitmap: slot `s` is bit `1 << (s & 7)` of byte `s >> 3`.
pub type SlotBits = [u8; 2048];

pub const SIGNATURE: &[u8; 4] = b"RCmb";
pub const HEADER_LEN: usize = 2256;
pub const GOSSIP_ENTRY_LEN: usize = 104;
/// Largest message accepted; a larger `totlen` closes the link.
pub const MAX_MESSAGE_LEN: usize = 8 << 20;

/// Message types.
pub mod kind {
    pub const PING: u16 = 0;
    pub const PONG: u16 = 1;
    pub const MEET: u16 = 2;
    pub const FAIL: u16 = 3;
    pub const PUBLISH: u16 = 4;
    pub const FAILOVER_AUTH_REQUEST: u16 = 5;
    pub const FAILOVER_AUTH_ACK: u16 = 6;
    pub const UPDATE: u16 = 7;
    pub const MFSTART: u16 = 8;
    pub const MODULE: u16 = 9;
    pub const PUBLISHSHARD: u16 = 10;
}

/// Node flag bits, in the header and in gossip entries.
pub mod flag {
    pub const MASTER: u16 = 1;
    pub const SLAVE: u16 = 2;
    pub const PFAIL: u16 = 4;
    pub const FAIL: u16 = 8;
    pub const MYSELF: u16 = 16;
    pub const HANDSHAKE: u16 = 32;
    pub const NOADDR: u16 = 64;
    pub const MEET: u16 = 128;
    pub const MIGRATE_TO: u16 = 256;
    pub const NOFAILOVER: u16 = 512;
}

/// `mflags[0]` bits.
pub mod mflag {
    pub const PAUSED: u8 = 1;
    pub const FORCEACK: u8 = 2;
    pub const EXT_DATA: u8 = 4;
}

/// Ping extension types (7.0 sends only HOSTNAME; 7.2 adds the others).
pub mod ext {
    pub const HOSTNAME: u16 = 0;
    pub const HUMAN_NODENAME: u16 = 1;
    pub const FORGOTTEN_NODE: u16 = 2;
    pub const SHARDID: u16 = 3;
}

/// The fixed header every message starts with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sender's client port.
    pub port: u16,
    pub kind: u16,
    pub current_epoch: u64,
    /// The sender's configEpoch, or its master's for a replica.
    pub config_epoch: u64,
    /// Replication offset.
    pub offset: u64,
    pub sender: NodeId,
    /// The sender's slots, or its master's for a replica.
    pub slots: Box<SlotBits>,
    /// The sender's master, `None` for 40 zero bytes.
    pub slaveof: Option<NodeId>,
    /// Announced IP, empty when not set (the receiver uses the socket address).
    pub myip: Vec<u8>,
    pub pport: u16,
    pub cport: u16,
    pub flags: u16,
    /// 0 ok, 1 fail, as the sender sees the cluster.
    pub state: u8,
    pub mflags: [u8; 3],
}

/// One gossip section entry (104 bytes on the wire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipEntry {
    pub node: NodeId,
    /// Seconds, from the sender's wall clock; 0 when none is pending.
    pub ping_sent: u32,
    pub pong_received: u32,
    pub ip: IpField,
    pub port: u16,
    pub cport: u16,
    pub flags: u16,
    pub pport: u16,
}

/// A gossip entry's address as the wire holds it, inline: up to `IP_FIELD_LEN - 1`
/// bytes (a NUL always remains). A `Vec` per entry, made for each entry decoded and each
/// sent, was half of a 1,000-node simulation's time in malloc.
// Bytes past `len` are always zero, so the derived equality compares addresses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IpField {
    bytes: [u8; IP_FIELD_LEN - 1],
    len: u8,
}

impl Default for IpField {
    fn default() -> IpField {
        IpField {
            bytes: [0; IP_FIELD_LEN - 1],
            len: 0,
        }
    }
}

impl IpField {
    /// The first `IP_FIELD_LEN - 1` bytes of `ip`, what the wire keeps of it.
    pub fn new(ip: &[u8]) -> IpField {
        let ip = ip.get(..IP_FIELD_LEN - 1).unwrap_or(ip);
        let mut field = IpField::default();
        field.bytes[..ip.len()].copy_from_slice(ip);
        field.len = ip.len() as u8;
        field
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for IpField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_slice()))
    }
}

/// A ping extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Extension {
    Hostname(Vec<u8>),
    HumanNodename(Vec<u8>),
    ForgottenNode {
        node: NodeId,
        ttl: u64,
    },
    ShardId(NodeId),
    /// A type this version does not know: kept so it re-encodes unchanged.
    Unknown {
        kind: u16,
        payload: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// PING, PONG and MEET.
    Ping {
        gossip: Vec<GossipEntry>,
        extensions: Vec<Extension>,
    },
    Fail {
        node: NodeId,
    },
    /// PUBLISH and PUBLISHSHARD.
    Publish {
        channel: Vec<u8>,
        message: Vec<u8>,
    },
    Update {
        config_epoch: u64,
        node: NodeId,
        slots: Box<SlotBits>,
    },
    Module {
        module_id: u64,
        kind: u8,
        payload: Vec<u8>,
    },
    /// FAILOVER_AUTH_REQUEST, FAILOVER_AUTH_ACK and MFSTART.
    Empty,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub body: Body,
}

/// Why a message was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    BadSignature,
    BadVersion(u16),
    /// `totlen` below the header, above [`MAX_MESSAGE_LEN`], or not what the type needs.
    BadLength {
        totlen: usize,
        expected: usize,
    },
    UnknownType(u16),
    /// A ping extension whose length is not a multiple of 8, shorter than its header, or
    /// runs past the message.
    BadExtension,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadSignature => write!(f, "bad signature"),
            DecodeError::BadVersion(v) => write!(f, "unsupported version {v}"),
            DecodeError::BadLength { totlen, expected } => {
                write!(f, "length {totlen}, expected {expected}")
            }
            DecodeError::UnknownType(t) => write!(f, "unknown message type {t}"),
            DecodeError::BadExtension => write!(f, "malformed ping extension"),
        }
    }
}

/// The only protocol version Redis 7.0 speaks (`CLUSTER_PROTO_VER`).
pub const PROTO_VER: u16 = 1;

/// Bytes needed before [`frame_len`] can tell a message's length: `sig` and `totlen`.
pub const FRAME_PREFIX_LEN: usize = 8;

/// Size of the `myip` and gossip `ip` fields (`NET_IP_STR_LEN`). At most
/// `IP_FIELD_LEN - 1` bytes of an address are used, so that a NUL always remains.
pub const IP_FIELD_LEN: usize = 46;

/// The node id that stands for "none" (`slaveof` of a master).
pub const NO_NODE: NodeId = [0; 40];

/// Length of a FAIL message: the header and one node name.
pub const FAIL_LEN: usize = HEADER_LEN + 40;

/// Length of an UPDATE message: the header, configEpoch, node name and slot bitmap.
/// It is also `sizeof(clusterMsg)`, since UPDATE is the largest member of the body union.
pub const UPDATE_LEN: usize = HEADER_LEN + 8 + 40 + 2048;

/// Fixed part of a PUBLISH / PUBLISHSHARD message: the header, `channel_len`, `message_len`.
pub const PUBLISH_FIXED_LEN: usize = HEADER_LEN + 8;

/// Fixed part of a MODULE message: the header, `module_id`, `len` and the type byte.
/// The payload follows the type byte directly: in `clusterMsgModule` it starts at
/// `bulk_data`, whose 3 bytes are a placeholder, not padding.
pub const MODULE_FIXED_LEN: usize = HEADER_LEN + 8 + 4 + 1;

/// Size of a ping extension's own header: u32 length, u16 type, u16 unused.
pub const EXT_HEADER_LEN: usize = 8;

/// Header field offsets (the static asserts in Redis 7.0's `cluster.h`).
mod off {
    pub const SIG: usize = 0;
    pub const TOTLEN: usize = 4;
    pub const VER: usize = 8;
    pub const PORT: usize = 10;
    pub const TYPE: usize = 12;
    pub const COUNT: usize = 14;
    pub const CURRENT_EPOCH: usize = 16;
    pub const CONFIG_EPOCH: usize = 24;
    pub const OFFSET: usize = 32;
    pub const SENDER: usize = 40;
    pub const MYSLOTS: usize = 80;
    pub const SLAVEOF: usize = 2128;
    pub const MYIP: usize = 2168;
    pub const EXTENSIONS: usize = 2214;
    pub const PPORT: usize = 2246;
    pub const CPORT: usize = 2248;
    pub const FLAGS: usize = 2250;
    pub const STATE: usize = 2252;
    pub const MFLAGS: usize = 2253;

    /// Gossip entry field offsets, relative to the entry.
    pub mod gossip {
        pub const NODE: usize = 0;
        pub const PING_SENT: usize = 40;
        pub const PONG_RECEIVED: usize = 44;
        pub const IP: usize = 48;
        pub const PORT: usize = 94;
        pub const CPORT: usize = 96;
        pub const FLAGS: usize = 98;
        pub const PPORT: usize = 100;
    }
}

// ---------------------------------------------------------------------------------------
// Helpers for the state machine.
// ---------------------------------------------------------------------------------------

/// Whether `slot` is set in `bits`. Slots past 16383 are never set.
pub fn slot_bit(bits: &SlotBits, slot: u16) -> bool {
    bits.get(usize::from(slot >> 3))
        .is_some_and(|b| b & (1 << (slot & 7)) != 0)
}

/// Sets or clears `slot` in `bits`. Slots past 16383 are ignored: there is no bit for
/// them, and a bad slot number must not take the node down.
pub fn set_slot_bit(bits: &mut SlotBits, slot: u16, on: bool) {
    if let Some(b) = bits.get_mut(usize::from(slot >> 3)) {
        let mask = 1 << (slot & 7);
        if on {
            *b |= mask;
        } else {
            *b &= !mask;
        }
    }
}

/// The set slots of `bits` as inclusive `(start, end)` ranges, in order (the shape
/// `CLUSTER NODES` and `CLUSTER SLOTS` print).
pub fn slot_ranges(bits: &SlotBits) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut start: Option<u16> = None;
    for slot in 0..16384u16 {
        match (slot_bit(bits, slot), start) {
            (true, None) => start = Some(slot),
            (false, Some(s)) => {
                out.push((s, slot - 1));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, 16383));
    }
    out
}

/// A node id as text. Ids are hex, but one read off the wire may be anything: the
/// longest valid UTF-8 prefix is returned rather than failing, which is enough for
/// logs and lookups (a non-hex id matches no known node anyway).
pub fn node_id_str(id: &NodeId) -> &str {
    match std::str::from_utf8(id) {
        Ok(s) => s,
        Err(e) => id
            .get(..e.valid_up_to())
            .and_then(|p| std::str::from_utf8(p).ok())
            .unwrap_or(""),
    }
}

// ---------------------------------------------------------------------------------------
// Framing.
// ---------------------------------------------------------------------------------------

/// Reads the length of the message at the start of a byte stream.
///
/// Returns `Ok(None)` while fewer than [`FRAME_PREFIX_LEN`] (8) bytes are buffered.
/// Once 8 are there, it checks the signature and that `totlen` lies within
/// [`HEADER_LEN`]..=[`MAX_MESSAGE_LEN`], and returns `Ok(Some(totlen))`, *whether or
/// not* `totlen` bytes are buffered yet: the caller waits until they are (see
/// [`next_frame`]), then hands exactly those bytes to [`decode`].
///
/// An error here means the stream cannot be resynchronised: close the link, as Redis
/// does ("Bad message length or signature received from Cluster bus"). By contrast a
/// [`decode`] error concerns one message only; Redis drops such a message and keeps
/// the link, and the next frame starts right after it.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(prefix) = buf.get(..FRAME_PREFIX_LEN) else {
        return Ok(None);
    };
    if prefix.get(off::SIG..off::SIG + 4) != Some(&SIGNATURE[..]) {
        return Err(DecodeError::BadSignature);
    }
    let totlen = usize_from(read_u32(prefix, off::TOTLEN)?);
    if totlen < HEADER_LEN {
        return Err(DecodeError::BadLength {
            totlen,
            expected: HEADER_LEN,
        });
    }
    if totlen > MAX_MESSAGE_LEN {
        return Err(DecodeError::BadLength {
            totlen,
            expected: MAX_MESSAGE_LEN,
        });
    }
    Ok(Some(totlen))
}

/// The first complete message of a byte stream, if it is all buffered: a slice of
/// exactly `totlen` bytes to pass to [`decode`]. Errors as [`frame_len`].
pub fn next_frame(buf: &[u8]) -> Result<Option<&[u8]>, DecodeError> {
    Ok(frame_len(buf)?.and_then(|n| buf.get(..n)))
}

// ---------------------------------------------------------------------------------------
// Decoding.
// ---------------------------------------------------------------------------------------

/// `u32` to `usize` without a silent wrap on (hypothetical) 16-bit targets.
fn usize_from(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// `n` bytes at `at`, or a length error. Every read goes through here, so a bad length
/// that slipped past the up-front checks still cannot index out of bounds.
fn bytes_at(buf: &[u8], at: usize, n: usize) -> Result<&[u8], DecodeError> {
    let end = at.saturating_add(n);
    buf.get(at..end).ok_or(DecodeError::BadLength {
        totlen: buf.len(),
        expected: end,
    })
}

fn array_at<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], DecodeError> {
    let s = bytes_at(buf, at, N)?;
    <[u8; N]>::try_from(s).map_err(|_| DecodeError::BadLength {
        totlen: buf.len(),
        expected: at.saturating_add(N),
    })
}

fn read_u8(buf: &[u8], at: usize) -> Result<u8, DecodeError> {
    Ok(u8::from_be_bytes(array_at(buf, at)?))
}

fn read_u16(buf: &[u8], at: usize) -> Result<u16, DecodeError> {
    Ok(u16::from_be_bytes(array_at(buf, at)?))
}

fn read_u32(buf: &[u8], at: usize) -> Result<u32, DecodeError> {
    Ok(u32::from_be_bytes(array_at(buf, at)?))
}

fn read_u64(buf: &[u8], at: usize) -> Result<u64, DecodeError> {
    Ok(u64::from_be_bytes(array_at(buf, at)?))
}

/// The bytes before the first NUL, looking at no more than `max` bytes. Redis forces a
/// NUL into the last byte of a copied IP field ("we are not sure the input is sane"),
/// so only the first 45 of its 46 bytes can ever matter.
fn c_string(field: &[u8], max: usize) -> Vec<u8> {
    c_str(field, max).to_vec()
}

/// The bytes of a NUL-terminated field, at most `max` of them.
fn c_str(field: &[u8], max: usize) -> &[u8] {
    let field = field.get(..max).unwrap_or(field);
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    field.get(..end).unwrap_or_default()
}

fn read_ip(buf: &[u8], at: usize) -> Result<Vec<u8>, DecodeError> {
    Ok(c_string(bytes_at(buf, at, IP_FIELD_LEN)?, IP_FIELD_LEN - 1))
}

/// [`read_ip`] without the allocation, for gossip entries.
fn read_ip_field(buf: &[u8], at: usize) -> Result<IpField, DecodeError> {
    Ok(IpField::new(c_str(
        bytes_at(buf, at, IP_FIELD_LEN)?,
        IP_FIELD_LEN - 1,
    )))
}

fn expect_len(totlen: usize, expected: usize) -> Result<(), DecodeError> {
    if totlen == expected {
        Ok(())
    } else {
        Err(DecodeError::BadLength { totlen, expected })
    }
}

/// Decodes one message. `buf` must be exactly the message: its length must equal the
/// `totlen` field (use [`frame_len`] / [`next_frame`] to cut a stream).
///
/// Checks, in order: signature and `totlen` bounds (as [`frame_len`]), `totlen ==
/// buf.len()`, `ver == 1`, a known type, and the exact length the type needs, walking
/// the ping extensions. Anything else is refused with an error; it never panics.
///
/// Ignored on the way in, as in Redis: `count` and `extensions` in non-ping types, and
/// the reserved bytes (`notused1`, the gossip `notused`, bytes after a NUL, extension
/// padding). They are written as zero again by [`encode`].
///
/// Ping extensions are read whenever the header's `extensions` count is non-zero,
/// whatever `mflags[0]` says. Redis 7.0 only *validates* them when EXT_DATA is set
/// (yet walks them regardless), so a sender must set EXT_DATA along with them.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let totlen = match frame_len(buf)? {
        Some(n) => n,
        None => {
            return Err(DecodeError::BadLength {
                totlen: buf.len(),
                expected: HEADER_LEN,
            })
        }
    };
    if totlen != buf.len() {
        return Err(DecodeError::BadLength {
            totlen,
            expected: buf.len(),
        });
    }
    let ver = read_u16(buf, off::VER)?;
    if ver != PROTO_VER {
        return Err(DecodeError::BadVersion(ver));
    }
    let kind = read_u16(buf, off::TYPE)?;
    if kind > kind::PUBLISHSHARD {
        return Err(DecodeError::UnknownType(kind));
    }

    let body = match kind {
        kind::PING | kind::PONG | kind::MEET => decode_ping(buf)?,
        kind::FAIL => {
            expect_len(totlen, FAIL_LEN)?;
            Body::Fail {
                node: array_at(buf, HEADER_LEN)?,
            }
        }
        kind::PUBLISH | kind::PUBLISHSHARD => decode_publish(buf)?,
        kind::FAILOVER_AUTH_REQUEST | kind::FAILOVER_AUTH_ACK | kind::MFSTART => {
            expect_len(totlen, HEADER_LEN)?;
            Body::Empty
        }
        kind::UPDATE => {
            expect_len(totlen, UPDATE_LEN)?;
            Body::Update {
                config_epoch: read_u64(buf, HEADER_LEN)?,
                node: array_at(buf, HEADER_LEN + 8)?,
                slots: Box::new(array_at(buf, HEADER_LEN + 48)?),
            }
        }
        kind::MODULE => decode_module(buf)?,
        other => return Err(DecodeError::UnknownType(other)),
    };

    let slaveof: NodeId = array_at(buf, off::SLAVEOF)?;
    let header = Header {
        port: read_u16(buf, off::PORT)?,
        kind,
        current_epoch: read_u64(buf, off::CURRENT_EPOCH)?,
        config_epoch: read_u64(buf, off::CONFIG_EPOCH)?,
        offset: read_u64(buf, off::OFFSET)?,
        sender: array_at(buf, off::SENDER)?,
        slots: Box::new(array_at(buf, off::MYSLOTS)?),
        slaveof: (slaveof != NO_NODE).then_some(slaveof),
        myip: read_ip(buf, off::MYIP)?,
        pport: read_u16(buf, off::PPORT)?,
        cport: read_u16(buf, off::CPORT)?,
        flags: read_u16(buf, off::FLAGS)?,
        state: read_u8(buf, off::STATE)?,
        mflags: array_at(buf, off::MFLAGS)?,
    };
    Ok(Message { header, body })
}

fn decode_ping(buf: &[u8]) -> Result<Body, DecodeError> {
    let totlen = buf.len();
    let count = usize::from(read_u16(buf, off::COUNT)?);
    let n_ext = read_u16(buf, off::EXTENSIONS)?;
    // At most 65535 * 104 bytes: no overflow, and checked against the buffer before
    // anything is allocated for it.
    let gossip_end = HEADER_LEN + count * GOSSIP_ENTRY_LEN;
    if gossip_end > totlen {
        return Err(DecodeError::BadLength {
            totlen,
            expected: gossip_end,
        });
    }
    let mut gossip = Vec::with_capacity(count);
    for i in 0..count {
        let e = bytes_at(buf, HEADER_LEN + i * GOSSIP_ENTRY_LEN, GOSSIP_ENTRY_LEN)?;
        gossip.push(GossipEntry {
            node: array_at(e, off::gossip::NODE)?,
            ping_sent: read_u32(e, off::gossip::PING_SENT)?,
            pong_received: read_u32(e, off::gossip::PONG_RECEIVED)?,
            ip: read_ip_field(e, off::gossip::IP)?,
            port: read_u16(e, off::gossip::PORT)?,
            cport: read_u16(e, off::gossip::CPORT)?,
            flags: read_u16(e, off::gossip::FLAGS)?,
            pport: read_u16(e, off::gossip::PPORT)?,
        });
    }

    let mut extensions = Vec::new();
    let mut at = gossip_end;
    for _ in 0..n_ext {
        // The extension header itself must fit.
        let Some(hdr) = buf.get(at..at + EXT_HEADER_LEN) else {
            return Err(DecodeError::BadExtension);
        };
        let len = usize_from(read_u32(hdr, 0)?);
        let ext_kind = read_u16(hdr, 4)?;
        // Redis 7.0 reads this length into a u16 for the checks (but a u32 to move to
        // the next extension) and accepts 0, which would make it loop in place. Here it
        // is a u32 throughout and must cover at least its own header.
        if len < EXT_HEADER_LEN || !len.is_multiple_of(8) || len > totlen - at {
            return Err(DecodeError::BadExtension);
        }
        let payload = buf
            .get(at + EXT_HEADER_LEN..at + len)
            .ok_or(DecodeError::BadExtension)?;
        extensions.push(decode_extension(ext_kind, payload)?);
        at += len;
    }
    expect_len(totlen, at)?;
    Ok(Body::Ping { gossip, extensions })
}

/// One ping extension's payload. Known types need their fixed fields; longer payloads
/// are accepted with the tail ignored, as Redis reads only the struct's fields (this
/// leaves room for a future version to grow them).
fn decode_extension(kind: u16, payload: &[u8]) -> Result<Extension, DecodeError> {
    Ok(match kind {
        ext::HOSTNAME | ext::HUMAN_NODENAME => {
            // Redis runs strlen() over it, so a string without its NUL would read past
            // the extension: refuse it.
            let end = payload
                .iter()
                .position(|&b| b == 0)
                .ok_or(DecodeError::BadExtension)?;
            let s = payload.get(..end).unwrap_or_default().to_vec();
            if kind == ext::HOSTNAME {
                Extension::Hostname(s)
            } else {
                Extension::HumanNodename(s)
            }
        }
        ext::FORGOTTEN_NODE => Extension::ForgottenNode {
            node: array_at(payload, 0).map_err(|_| DecodeError::BadExtension)?,
            ttl: read_u64(payload, 40).map_err(|_| DecodeError::BadExtension)?,
        },
        ext::SHARDID => {
            Extension::ShardId(array_at(payload, 0).map_err(|_| DecodeError::BadExtension)?)
        }
        kind => Extension::Unknown {
            kind,
            payload: payload.to_vec(),
        },
    })
}

fn decode_publish(buf: &[u8]) -> Result<Body, DecodeError> {
    let totlen = buf.len();
    if totlen < PUBLISH_FIXED_LEN {
        return Err(DecodeError::BadLength {
            totlen,
            expected: PUBLISH_FIXED_LEN,
        });
    }
    let channel_len = read_u32(buf, HEADER_LEN)?;
    let message_len = read_u32(buf, HEADER_LEN + 4)?;
    // Summed in u64: Redis 7.0 adds them in a u32, where a wrapped sum could match
    // totlen while the lengths point far past the message.
    let expected = PUBLISH_FIXED_LEN as u64 + u64::from(channel_len) + u64::from(message_len);
    if expected != totlen as u64 {
        return Err(DecodeError::BadLength {
            totlen,
            expected: usize::try_from(expected).unwrap_or(usize::MAX),
        });
    }
    let channel_len = usize_from(channel_len);
    let channel = bytes_at(buf, PUBLISH_FIXED_LEN, channel_len)?.to_vec();
    let message = bytes_at(
        buf,
        PUBLISH_FIXED_LEN + channel_len,
        usize_from(message_len),
    )?
    .to_vec();
    Ok(Body::Publish { channel, message })
}

fn decode_module(buf: &[u8]) -> Result<Body, DecodeError> {
    let totlen = buf.len();
    if totlen < MODULE_FIXED_LEN {
        return Err(DecodeError::BadLength {
            totlen,
            expected: MODULE_FIXED_LEN,
        });
    }
    let module_id = read_u64(buf, HEADER_LEN)?;
    let len = read_u32(buf, HEADER_LEN + 8)?;
    let kind = read_u8(buf, HEADER_LEN + 12)?;
    let expected = MODULE_FIXED_LEN as u64 + u64::from(len);
    if expected != totlen as u64 {
        return Err(DecodeError::BadLength {
            totlen,
            expected: usize::try_from(expected).unwrap_or(usize::MAX),
        });
    }
    let payload = bytes_at(buf, MODULE_FIXED_LEN, usize_from(len))?.to_vec();
    Ok(Body::Module {
        module_id,
        kind,
        payload,
    })
}

// ---------------------------------------------------------------------------------------
// Encoding.
// ---------------------------------------------------------------------------------------

/// Largest gossip / extension count a message can carry (the fields are u16). Anything
/// past it is left out, so that the counts always match what is written.
const MAX_COUNT: usize = u16::MAX as usize;

/// `len` rounded up to a multiple of 8.
fn align8(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// The bytes an extension takes on the wire, its 8-byte header included (the value of
/// its `length` field).
pub fn extension_len(e: &Extension) -> usize {
    EXT_HEADER_LEN
        + match e {
            // The string, its NUL, then zeros to a multiple of 8.
            Extension::Hostname(s) | Extension::HumanNodename(s) => align8(s.len() + 1),
            Extension::ForgottenNode { .. } => 48,
            Extension::ShardId(_) => 40,
            Extension::Unknown { payload, .. } => align8(payload.len()),
        }
}

/// The length [`encode`] will produce for `msg` (its `totlen`).
pub fn encoded_len(msg: &Message) -> usize {
    HEADER_LEN
        + match &msg.body {
            Body::Ping { gossip, extensions } => {
                gossip.len().min(MAX_COUNT) * GOSSIP_ENTRY_LEN
                    + extensions
                        .iter()
                        .take(MAX_COUNT)
                        .map(extension_len)
                        .sum::<usize>()
            }
            Body::Fail { .. } => FAIL_LEN - HEADER_LEN,
            Body::Publish { channel, message } => 8 + channel.len() + message.len(),
            Body::Update { .. } => UPDATE_LEN - HEADER_LEN,
            Body::Module { payload, .. } => MODULE_FIXED_LEN - HEADER_LEN + payload.len(),
            Body::Empty => 0,
        }
}

/// Encodes `msg` into a new buffer. See [`encode_into`].
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(msg));
    encode_into(msg, &mut out);
    out
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_zeros(out: &mut Vec<u8>, n: usize) {
    out.resize(out.len() + n, 0);
}

/// A u32 length field. Past 4 GiB the message is refused by every peer anyway
/// ([`MAX_MESSAGE_LEN`]); saturating keeps encoding infallible.
fn u32_len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// An IP into its 46-byte field: at most 45 bytes, so that a NUL always ends it, and
/// zeros after.
fn put_ip(out: &mut Vec<u8>, ip: &[u8]) {
    let ip = ip.get(..IP_FIELD_LEN - 1).unwrap_or(ip);
    out.extend_from_slice(ip);
    put_zeros(out, IP_FIELD_LEN - ip.len());
}

/// Appends `msg` to `out`, byte for byte as Redis 7.0 lays it out.
///
/// The header is written as given, with `mflags` untouched: in particular EXT_DATA is
/// *not* set for extensions, the caller decides (Redis 7.0 sets it exactly when it
/// sends an extension, and only looks at extensions when it is set). `header.kind`
/// must agree with the body. `totlen`, `count` and `extensions` are derived from the
/// body (`count` and `extensions` are 0 outside PING/PONG/MEET, as Redis sends them).
/// `ver` is 1 and every reserved or padding byte is zero.
///
/// Strings are written as they are, except that an IP longer than 45 bytes is cut to
/// 45; a hostname or IP holding a NUL byte decodes back only up to that NUL. At most
/// 65535 gossip entries and extensions are written.
pub fn encode_into(msg: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    let h = &msg.header;
    let (count, n_ext) = match &msg.body {
        Body::Ping { gossip, extensions } => {
            (gossip.len().min(MAX_COUNT), extensions.len().min(MAX_COUNT))
        }
        _ => (0, 0),
    };
    out.reserve(encoded_len(msg));

    out.extend_from_slice(SIGNATURE);
    put_u32(out, 0); // totlen, patched below
    put_u16(out, PROTO_VER);
    put_u16(out, h.port);
    put_u16(out, h.kind);
    put_u16(out, u16::try_from(count).unwrap_or(u16::MAX));
    put_u64(out, h.current_epoch);
    put_u64(out, h.config_epoch);
    put_u64(out, h.offset);
    out.extend_from_slice(&h.sender);
    out.extend_from_slice(&h.slots[..]);
    out.extend_from_slice(h.slaveof.as_ref().unwrap_or(&NO_NODE));
    put_ip(out, &h.myip);
    put_u16(out, u16::try_from(n_ext).unwrap_or(u16::MAX));
    put_zeros(out, 30); // notused1
    put_u16(out, h.pport);
    put_u16(out, h.cport);
    put_u16(out, h.flags);
    out.push(h.state);
    out.extend_from_slice(&h.mflags);
    debug_assert_eq!(out.len() - start, HEADER_LEN);

    match &msg.body {
        Body::Ping { gossip, extensions } => {
            for g in gossip.iter().take(count) {
                out.extend_from_slice(&g.node);
                put_u32(out, g.ping_sent);
                put_u32(out, g.pong_received);
                put_ip(out, g.ip.as_slice());
                put_u16(out, g.port);
                put_u16(out, g.cport);
                put_u16(out, g.flags);
                put_u16(out, g.pport);
                put_u16(out, 0); // notused1
            }
            for e in extensions.iter().take(n_ext) {
                encode_extension(e, out);
            }
        }
        Body::Fail { node } => out.extend_from_slice(node),
        Body::Publish { channel, message } => {
            put_u32(out, u32_len(channel.len()));
            put_u32(out, u32_len(message.len()));
            out.extend_from_slice(channel);
            out.extend_from_slice(message);
        }
        Body::Update {
            config_epoch,
            node,
            slots,
        } => {
            put_u64(out, *config_epoch);
            out.extend_from_slice(node);
            out.extend_from_slice(&slots[..]);
        }
        Body::Module {
            module_id,
            kind,
            payload,
        } => {
            put_u64(out, *module_id);
            put_u32(out, u32_len(payload.len()));
            out.push(*kind);
            out.extend_from_slice(payload);
        }
        Body::Empty => {}
    }

    let totlen = u32_len(out.len() - start).to_be_bytes();
    if let Some(field) = out.get_mut(start + off::TOTLEN..start + off::TOTLEN + 4) {
        field.copy_from_slice(&totlen);
    }
}

fn encode_extension(e: &Extension, out: &mut Vec<u8>) {
    let start = out.len();
    let (kind, payload): (u16, &[u8]) = match e {
        Extension::Hostname(s) => (ext::HOSTNAME, s),
        Extension::HumanNodename(s) => (ext::HUMAN_NODENAME, s),
        Extension::ForgottenNode { .. } => (ext::FORGOTTEN_NODE, &[]),
        Extension::ShardId(id) => (ext::SHARDID, id),
        Extension::Unknown { kind, payload } => (*kind, payload),
    };
    let len = extension_len(e);
    put_u32(out, u32_len(len));
    put_u16(out, kind);
    put_u16(out, 0); // unused
    if let Extension::ForgottenNode { node, ttl } = e {
        out.extend_from_slice(node);
        put_u64(out, *ttl);
    } else {
        out.extend_from_slice(payload);
    }
    // The NUL after a string and the padding to a multiple of 8.
    let written = out.len() - start;
    put_zeros(out, len.saturating_sub(written));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(c: u8) -> NodeId {
        [c; 40]
    }

    fn header(kind: u16) -> Header {
        let mut slots = Box::new([0u8; 2048]);
        for s in 0..=5460 {
            set_slot_bit(&mut slots, s, true);
        }
        Header {
            port: 17700,
            kind,
            current_epoch: 8,
            config_epoch: 1,
            offset: 56,
            sender: *b"8c7159ab761734bc8f0b8633aa349822ade249e9",
            slots,
            slaveof: None,
            myip: b"10.0.0.1".to_vec(),
            pport: 0,
            cport: 27700,
            flags: flag::MASTER | flag::MYSELF,
            state: 0,
            mflags: [0; 3],
        }
    }

    fn gossip_entry(c: u8) -> GossipEntry {
        GossipEntry {
            node: id(c),
            ping_sent: 1_795_353_458,
            pong_received: 7,
            ip: IpField::new(b"127.0.0.1"),
            port: 17701,
            cport: 27701,
            flags: flag::SLAVE | flag::PFAIL,
            pport: 6379,
        }
    }

    /// One message of every body shape, with the length Redis expects for it.
    fn samples() -> Vec<(Message, usize)> {
        let mut update_slots = Box::new([0u8; 2048]);
        set_slot_bit(&mut update_slots, 16383, true);
        let mut with_ext = header(kind::PONG);
        with_ext.mflags[0] = mflag::EXT_DATA;
        vec![
            (
                Message {
                    header: header(kind::PING),
                    body: Body::Ping {
                        gossip: vec![],
                        extensions: vec![],
                    },
                },
                HEADER_LEN,
            ),
            (
                Message {
                    header: header(kind::MEET),
                    body: Body::Ping {
                        gossip: vec![gossip_entry(b'a'), gossip_entry(b'b')],
                        extensions: vec![],
                    },
                },
                HEADER_LEN + 2 * 104,
            ),
            (
                Message {
                    header: with_ext,
                    body: Body::Ping {
                        gossip: vec![gossip_entry(b'c')],
                        extensions: vec![
                            Extension::Hostname(b"node-17701.test".to_vec()),
                            Extension::HumanNodename(b"1234567".to_vec()),
                            Extension::ForgottenNode {
                                node: id(b'd'),
                                ttl: 60,
                            },
                            Extension::ShardId(id(b'e')),
                            Extension::Unknown {
                                kind: 99,
                                payload: vec![1; 16],
                            },
                            Extension::Hostname(vec![]),
                        ],
                    },
                },
                HEADER_LEN + 104 + 24 + 16 + 56 + 48 + 24 + 16,
            ),
            (
                Message {
                    header: header(kind::FAIL),
                    body: Body::Fail { node: id(b'f') },
                },
                2296,
            ),
            (
                Message {
                    header: header(kind::PUBLISH),
                    body: Body::Publish {
                        channel: b"news".to_vec(),
                        message: b"hello-cluster-bus".to_vec(),
                    },
                },
                2264 + 4 + 17,
            ),
            (
                Message {
                    header: header(kind::PUBLISHSHARD),
                    body: Body::Publish {
                        channel: vec![],
                        message: vec![],
                    },
                },
                2264,
            ),
            (
                Message {
                    header: header(kind::FAILOVER_AUTH_REQUEST),
                    body: Body::Empty,
                },
                HEADER_LEN,
            ),
            (
                Message {
                    header: header(kind::FAILOVER_AUTH_ACK),
                    body: Body::Empty,
                },
                HEADER_LEN,
            ),
            (
                Message {
                    header: Header {
                        slaveof: Some(id(b'9')),
                        ..header(kind::MFSTART)
                    },
                    body: Body::Empty,
                },
                HEADER_LEN,
            ),
            (
                Message {
                    header: header(kind::UPDATE),
                    body: Body::Update {
                        config_epoch: 8,
                        node: id(b'u'),
                        slots: update_slots,
                    },
                },
                4352,
            ),
            (
                Message {
                    header: header(kind::MODULE),
                    body: Body::Module {
                        module_id: 0x0102_0304_0506_0708,
                        kind: 200,
                        payload: b"abc".to_vec(),
                    },
                },
                2269 + 3,
            ),
        ]
    }

    #[test]
    fn every_body_type_round_trips() {
        for (msg, len) in samples() {
            let bytes = encode(&msg);
            assert_eq!(bytes.len(), len, "{msg:?}");
            assert_eq!(encoded_len(&msg), len);
            assert_eq!(frame_len(&bytes), Ok(Some(len)));
            let back = decode(&bytes).unwrap();
            assert_eq!(back, msg);
            assert_eq!(encode(&back), bytes);
        }
    }

    /// Seeds for the `cluster_bus` fuzz target (`cargo xtask fuzz cluster_bus` runs this
    /// with CARMINE_FUZZ_SEEDS set): one encoded message of every body shape, and all of
    /// them back to back as a link reads them. libFuzzer does not find a message with a
    /// 2,256-byte header on its own: from an empty corpus a 240 s run found 5 inputs.
    #[test]
    #[ignore = "writes files; run by cargo xtask fuzz"]
    fn write_fuzz_seeds() {
        let Some(dir) = std::env::var_os("CARMINE_FUZZ_SEEDS") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("seed folder");
        let mut stream = Vec::new();
        for (i, (msg, _)) in samples().iter().enumerate() {
            let bytes = encode(msg);
            stream.extend_from_slice(&bytes);
            std::fs::write(dir.join(format!("seed-{i:02}")), bytes).expect("seed");
        }
        std::fs::write(dir.join("seed-stream"), stream).expect("seed");
    }

    #[test]
    fn header_layout() {
        let (msg, _) = samples().swap_remove(2);
        let b = encode(&msg);
        assert_eq!(&b[0..4], b"RCmb");
        assert_eq!(
            u32::from_be_bytes(b[4..8].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(&b[8..10], &[0, 1]);
        assert_eq!(&b[10..12], &17700u16.to_be_bytes());
        assert_eq!(&b[12..14], &kind::PONG.to_be_bytes());
        assert_eq!(&b[14..16], &1u16.to_be_bytes()); // count
        assert_eq!(&b[16..24], &8u64.to_be_bytes());
        assert_eq!(&b[24..32], &1u64.to_be_bytes());
        assert_eq!(&b[32..40], &56u64.to_be_bytes());
        assert_eq!(&b[40..80], b"8c7159ab761734bc8f0b8633aa349822ade249e9");
        // Slots 0..=5460: bytes 0..682 full, 682 = slots 5456..5463 -> low 5 bits.
        assert_eq!(b[80], 0xff);
        assert_eq!(b[80 + 682], 0x1f);
        assert_eq!(b[80 + 683], 0);
        assert_eq!(&b[2128..2168], &[0; 40]);
        assert_eq!(&b[2168..2176], b"10.0.0.1");
        assert!(b[2176..2214].iter().all(|&x| x == 0));
        assert_eq!(&b[2214..2216], &6u16.to_be_bytes()); // extensions
        assert!(b[2216..2246].iter().all(|&x| x == 0));
        assert_eq!(&b[2248..2250], &27700u16.to_be_bytes());
        assert_eq!(&b[2250..2252], &17u16.to_be_bytes());
        assert_eq!(&b[2253..2256], &[mflag::EXT_DATA, 0, 0]);
        // The gossip entry, then the hostname extension.
        let g = &b[2256..2360];
        assert_eq!(&g[0..40], &[b'c'; 40]);
        assert_eq!(&g[48..57], b"127.0.0.1");
        assert_eq!(&g[94..96], &17701u16.to_be_bytes());
        assert_eq!(&g[100..104], &[0x18, 0xeb, 0, 0]);
        assert_eq!(&b[2360..2368], &[0, 0, 0, 24, 0, 0, 0, 0]);
        assert_eq!(&b[2368..2384], b"node-17701.test\0");
        // Forgotten node: after the 24-byte hostname and the 16-byte human nodename.
        let f = 2360 + 24 + 16;
        assert_eq!(&b[f..f + 8], &[0, 0, 0, 56, 0, 2, 0, 0]);
        assert_eq!(&b[f + 48..f + 56], &60u64.to_be_bytes());
    }

    #[test]
    fn module_payload_follows_the_type_byte() {
        let (msg, _) = samples().pop().unwrap();
        let b = encode(&msg);
        assert_eq!(&b[2256..2264], &0x0102_0304_0506_0708u64.to_be_bytes());
        assert_eq!(&b[2264..2268], &3u32.to_be_bytes());
        assert_eq!(b[2268], 200);
        assert_eq!(&b[2269..], b"abc");
    }

    #[test]
    fn long_ip_is_cut_to_45_bytes() {
        let mut msg = samples().swap_remove(1).0;
        msg.header.myip = vec![b'x'; 60];
        if let Body::Ping { gossip, .. } = &mut msg.body {
            gossip[0].ip = IpField::new(&[b'y'; 46]);
        }
        let b = encode(&msg);
        let back = decode(&b).unwrap();
        assert_eq!(back.header.myip, vec![b'x'; 45]);
        let Body::Ping { gossip, .. } = back.body else {
            panic!("not a ping")
        };
        assert_eq!(gossip[0].ip.as_slice(), [b'y'; 45]);
    }

    #[test]
    fn ip_field_without_nul_reads_45_bytes() {
        // Redis forces a NUL into byte 45 of a received IP, so the last byte never counts.
        let mut b = encode(&samples()[0].0);
        b[2168..2214].fill(b'1');
        assert_eq!(decode(&b).unwrap().header.myip, vec![b'1'; 45]);
    }

    #[test]
    fn reserved_bytes_are_ignored_and_rewritten_as_zero() {
        let (msg, _) = samples().swap_remove(1);
        let clean = encode(&msg);
        let mut dirty = clean.clone();
        dirty[2216..2246].fill(0xaa); // notused1
        dirty[2178] = 0; // NUL then junk in myip
        dirty[2180] = b'z';
        dirty[2256 + 102] = 0x55; // gossip notused
        let back = decode(&dirty).unwrap();
        assert_eq!(back.header.myip, b"10.0.0.1");
        assert_eq!(encode(&back), clean);
    }

    #[test]
    fn truncated_or_extended_messages_are_refused() {
        for (msg, _) in samples() {
            let b = encode(&msg);
            for cut in 0..b.len() {
                assert!(decode(&b[..cut]).is_err(), "prefix {cut} of {msg:?}");
            }
            let mut longer = b.clone();
            longer.push(0);
            assert!(decode(&longer).is_err());
            // Even with totlen patched to the new length, the type's length is wrong.
            let n = (longer.len() as u32).to_be_bytes();
            longer[4..8].copy_from_slice(&n);
            assert!(matches!(
                decode(&longer),
                Err(DecodeError::BadLength { .. } | DecodeError::BadExtension)
            ));
        }
    }

    #[test]
    fn header_checks() {
        let good = encode(&samples()[3].0);
        assert!(decode(&good).is_ok());

        assert!(matches!(decode(&[]), Err(DecodeError::BadLength { .. })));
        assert!(matches!(
            decode(b"RCmb"),
            Err(DecodeError::BadLength { .. })
        ));

        let mut b = good.clone();
        b[3] = b'c';
        assert_eq!(decode(&b), Err(DecodeError::BadSignature));

        let mut b = good.clone();
        b[9] = 2;
        assert_eq!(decode(&b), Err(DecodeError::BadVersion(2)));

        let mut b = good.clone();
        b[13] = 11;
        assert_eq!(decode(&b), Err(DecodeError::UnknownType(11)));
        b[12] = 0xff;
        assert_eq!(decode(&b), Err(DecodeError::UnknownType(0xff0b)));

        // totlen disagreeing with the buffer.
        let mut b = good.clone();
        b[4..8].copy_from_slice(&2297u32.to_be_bytes());
        assert_eq!(
            decode(&b),
            Err(DecodeError::BadLength {
                totlen: 2297,
                expected: 2296
            })
        );
        // Each type's fixed length.
        for (kind, len) in [
            (kind::FAIL, 2296),
            (kind::UPDATE, 4352),
            (kind::MFSTART, 2256),
        ] {
            let mut b = good.clone();
            b[12..14].copy_from_slice(&kind.to_be_bytes());
            if len == 2296 {
                assert!(decode(&b).is_ok());
            } else {
                assert_eq!(
                    decode(&b),
                    Err(DecodeError::BadLength {
                        totlen: 2296,
                        expected: len
                    })
                );
            }
        }
    }

    #[test]
    fn frame_len_checks() {
        let b = encode(&samples()[3].0);
        for n in 0..8 {
            assert_eq!(frame_len(&b[..n]), Ok(None));
            assert_eq!(next_frame(&b[..n]), Ok(None));
        }
        for n in 8..b.len() {
            assert_eq!(frame_len(&b[..n]), Ok(Some(2296)));
            assert_eq!(next_frame(&b[..n]), Ok(None));
        }
        assert_eq!(next_frame(&b), Ok(Some(&b[..])));
        let mut two = b.clone();
        two.extend_from_slice(&b[..100]);
        assert_eq!(next_frame(&two), Ok(Some(&b[..])));

        assert_eq!(
            frame_len(b"RCmX\0\0\x08\xd0"),
            Err(DecodeError::BadSignature)
        );
        assert_eq!(
            frame_len(b"RCmb\0\0\x08\xcf"),
            Err(DecodeError::BadLength {
                totlen: 2255,
                expected: HEADER_LEN
            })
        );
        assert_eq!(frame_len(b"RCmb\0\0\x08\xd0"), Ok(Some(2256)));
        assert_eq!(frame_len(b"RCmb\0\x80\0\0"), Ok(Some(MAX_MESSAGE_LEN)));
        assert!(frame_len(b"RCmb\0\x80\0\x01").is_err());
        assert!(frame_len(b"RCmb\xff\xff\xff\xff").is_err());
    }

    /// A PING whose body is `body` verbatim, with the given counts.
    fn raw_ping(count: u16, n_ext: u16, body: &[u8]) -> Vec<u8> {
        let mut b = encode(&samples()[0].0);
        b[14..16].copy_from_slice(&count.to_be_bytes());
        b[2214..2216].copy_from_slice(&n_ext.to_be_bytes());
        b.extend_from_slice(body);
        let n = (b.len() as u32).to_be_bytes();
        b[4..8].copy_from_slice(&n);
        b
    }

    fn ext_bytes(len: u32, kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = len.to_be_bytes().to_vec();
        v.extend_from_slice(&kind.to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn malformed_ping_bodies() {
        // Gossip count past the end.
        assert!(matches!(
            decode(&raw_ping(1, 0, &[0; 103])),
            Err(DecodeError::BadLength { .. })
        ));
        assert!(matches!(
            decode(&raw_ping(u16::MAX, 0, &[])),
            Err(DecodeError::BadLength { .. })
        ));
        // Extension count but no extension bytes.
        assert_eq!(decode(&raw_ping(0, 1, &[])), Err(DecodeError::BadExtension));
        assert_eq!(
            decode(&raw_ping(0, 1, &[0, 0, 0])),
            Err(DecodeError::BadExtension)
        );
        // Length 0 (Redis would loop in place), not a multiple of 8, past the end.
        let zero = ext_bytes(0, ext::HOSTNAME, b"ab\0\0\0\0\0\0");
        assert_eq!(
            decode(&raw_ping(0, 1, &zero)),
            Err(DecodeError::BadExtension)
        );
        let odd = ext_bytes(12, ext::HOSTNAME, b"ab\0\0");
        assert_eq!(
            decode(&raw_ping(0, 1, &odd)),
            Err(DecodeError::BadExtension)
        );
        let long = ext_bytes(24, ext::HOSTNAME, b"ab\0\0\0\0\0\0");
        assert_eq!(
            decode(&raw_ping(0, 1, &long)),
            Err(DecodeError::BadExtension)
        );
        let huge = ext_bytes(u32::MAX - 7, 77, b"ab\0\0\0\0\0\0");
        assert_eq!(
            decode(&raw_ping(0, 1, &huge)),
            Err(DecodeError::BadExtension)
        );
        // Hostname without its NUL.
        let no_nul = ext_bytes(16, ext::HOSTNAME, b"abcdefgh");
        assert_eq!(
            decode(&raw_ping(0, 1, &no_nul)),
            Err(DecodeError::BadExtension)
        );
        let empty = ext_bytes(8, ext::HUMAN_NODENAME, b"");
        assert_eq!(
            decode(&raw_ping(0, 1, &empty)),
            Err(DecodeError::BadExtension)
        );
        // Fixed-size extensions too short.
        let short = ext_bytes(48, ext::FORGOTTEN_NODE, &[b'a'; 40]);
        assert_eq!(
            decode(&raw_ping(0, 1, &short)),
            Err(DecodeError::BadExtension)
        );
        let short = ext_bytes(40, ext::SHARDID, &[b'a'; 32]);
        assert_eq!(
            decode(&raw_ping(0, 1, &short)),
            Err(DecodeError::BadExtension)
        );
        // Extension bytes left over beyond the announced count.
        let one = ext_bytes(16, ext::HOSTNAME, b"abc\0\0\0\0\0");
        let mut two = one.clone();
        two.extend_from_slice(&one);
        assert!(decode(&raw_ping(0, 2, &two)).is_ok());
        assert!(matches!(
            decode(&raw_ping(0, 1, &two)),
            Err(DecodeError::BadLength { .. })
        ));
    }

    #[test]
    fn lenient_ping_extensions() {
        // Junk after the hostname's NUL, and a longer-than-needed shard id: accepted,
        // the extra bytes dropped, as Redis reads only the fields it knows.
        let mut body = ext_bytes(24, ext::HOSTNAME, b"host\0xyzabcdefgh");
        body.extend_from_slice(&ext_bytes(56, ext::SHARDID, &[b's'; 48]));
        body.extend_from_slice(&ext_bytes(8, 4242, &[]));
        let m = decode(&raw_ping(0, 3, &body)).unwrap();
        assert_eq!(
            m.body,
            Body::Ping {
                gossip: vec![],
                extensions: vec![
                    Extension::Hostname(b"host".to_vec()),
                    Extension::ShardId(id(b's')),
                    Extension::Unknown {
                        kind: 4242,
                        payload: vec![]
                    },
                ]
            }
        );
    }

    #[test]
    fn publish_and_module_lengths_cannot_overflow() {
        let base = encode(&samples()[5].0); // empty PUBLISHSHARD
        let mut b = base.clone();
        // u32 sum wraps to 0: Redis 7.0 would compute explen == totlen here.
        b[2256..2260].copy_from_slice(&u32::MAX.to_be_bytes());
        b[2260..2264].copy_from_slice(&1u32.to_be_bytes());
        assert!(matches!(decode(&b), Err(DecodeError::BadLength { .. })));
        let mut b = base.clone();
        b[2256..2264].fill(0xff);
        assert!(matches!(decode(&b), Err(DecodeError::BadLength { .. })));
        // Shorter than the fixed part.
        let mut b = base[..2260].to_vec();
        b[4..8].copy_from_slice(&2260u32.to_be_bytes());
        assert_eq!(
            decode(&b),
            Err(DecodeError::BadLength {
                totlen: 2260,
                expected: 2264
            })
        );
        let mut b = encode(&samples()[10].0);
        b[2264..2268].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&b), Err(DecodeError::BadLength { .. })));
        let mut b = b[..2268].to_vec();
        b[4..8].copy_from_slice(&2268u32.to_be_bytes());
        assert!(matches!(decode(&b), Err(DecodeError::BadLength { .. })));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(decode(&[0u8; 5000]).is_err());
        assert!(decode(&[0xffu8; 2256]).is_err());
        let mut b = vec![0u8; 2256];
        b[..4].copy_from_slice(b"RCmb");
        assert!(decode(&b).is_err());
    }

    #[test]
    fn slot_helpers() {
        let mut bits = [0u8; 2048];
        assert!(slot_ranges(&bits).is_empty());
        set_slot_bit(&mut bits, 0, true);
        set_slot_bit(&mut bits, 7, true);
        set_slot_bit(&mut bits, 8, true);
        set_slot_bit(&mut bits, 16383, true);
        set_slot_bit(&mut bits, 16384, true); // ignored
        set_slot_bit(&mut bits, u16::MAX, true); // ignored
        assert_eq!(bits[0], 0x81);
        assert_eq!(bits[1], 0x01);
        assert_eq!(bits[2047], 0x80);
        assert!(slot_bit(&bits, 7) && slot_bit(&bits, 8) && !slot_bit(&bits, 9));
        assert!(!slot_bit(&bits, 16384) && !slot_bit(&bits, u16::MAX));
        assert_eq!(slot_ranges(&bits), vec![(0, 0), (7, 8), (16383, 16383)]);
        set_slot_bit(&mut bits, 7, false);
        assert_eq!(bits[0], 0x01);
        let all = [0xffu8; 2048];
        assert_eq!(slot_ranges(&all), vec![(0, 16383)]);
    }

    #[test]
    fn node_id_text() {
        let id = *b"8c7159ab761734bc8f0b8633aa349822ade249e9";
        assert_eq!(node_id_str(&id), "8c7159ab761734bc8f0b8633aa349822ade249e9");
        let mut bad = id;
        bad[4] = 0xff;
        assert_eq!(node_id_str(&bad), "8c71");
        assert_eq!(node_id_str(&NO_NODE), "\0".repeat(40));
    }

    // ---- property tests -------------------------------------------------------------

    fn arb_id() -> impl Strategy<Value = NodeId> {
        prop::collection::vec(any::<u8>(), 40).prop_map(|v| {
            let mut id = [0u8; 40];
            id.copy_from_slice(&v);
            id
        })
    }

    fn arb_slots() -> impl Strategy<Value = Box<SlotBits>> {
        prop_oneof![
            Just(Box::new([0u8; 2048])),
            prop::collection::vec(any::<u8>(), 2048).prop_map(|v| {
                let mut s = Box::new([0u8; 2048]);
                s.copy_from_slice(&v);
                s
            }),
        ]
    }

    /// Text without NUL bytes: a NUL ends the string on the wire.
    fn arb_text(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(1u8..=255, 0..=max)
    }

    fn arb_gossip() -> impl Strategy<Value = GossipEntry> {
        (
            arb_id(),
            any::<u32>(),
            any::<u32>(),
            arb_text(IP_FIELD_LEN - 1),
            any::<[u16; 4]>(),
        )
            .prop_map(
                |(node, ping_sent, pong_received, ip, [port, cport, flags, pport])| GossipEntry {
                    node,
                    ping_sent,
                    pong_received,
                    ip: IpField::new(&ip),
                    port,
                    cport,
                    flags,
                    pport,
                },
            )
    }

    fn arb_extension() -> impl Strategy<Value = Extension> {
        prop_oneof![
            arb_text(300).prop_map(Extension::Hostname),
            arb_text(40).prop_map(Extension::HumanNodename),
            (arb_id(), any::<u64>()).prop_map(|(node, ttl)| Extension::ForgottenNode { node, ttl }),
            arb_id().prop_map(Extension::ShardId),
            (4u16.., prop::collection::vec(any::<u8>(), 0..6)).prop_map(|(kind, words)| {
                Extension::Unknown {
                    kind,
                    // A whole number of 8-byte words, as it comes off the wire.
                    payload: words.iter().flat_map(|&w| [w; 8]).collect(),
                }
            }),
        ]
    }

    /// A body and a type that fits it.
    fn arb_body() -> impl Strategy<Value = (u16, Body)> {
        let bytes = || prop::collection::vec(any::<u8>(), 0..200);
        prop_oneof![
            (
                prop_oneof![Just(kind::PING), Just(kind::PONG), Just(kind::MEET)],
                prop::collection::vec(arb_gossip(), 0..6),
                prop::collection::vec(arb_extension(), 0..5),
            )
                .prop_map(|(k, gossip, extensions)| (k, Body::Ping { gossip, extensions })),
            arb_id().prop_map(|node| (kind::FAIL, Body::Fail { node })),
            (
                prop_oneof![Just(kind::PUBLISH), Just(kind::PUBLISHSHARD)],
                bytes(),
                bytes()
            )
                .prop_map(|(k, channel, message)| (k, Body::Publish { channel, message })),
            (any::<u64>(), arb_id(), arb_slots()).prop_map(|(config_epoch, node, slots)| (
                kind::UPDATE,
                Body::Update {
                    config_epoch,
                    node,
                    slots
                }
            )),
            (any::<u64>(), any::<u8>(), bytes()).prop_map(|(module_id, kind, payload)| (
                kind::MODULE,
                Body::Module {
                    module_id,
                    kind,
                    payload
                }
            )),
            prop_oneof![
                Just(kind::FAILOVER_AUTH_REQUEST),
                Just(kind::FAILOVER_AUTH_ACK),
                Just(kind::MFSTART)
            ]
            .prop_map(|k| (k, Body::Empty)),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        (
            arb_body(),
            any::<[u64; 3]>(),
            arb_id(),
            arb_slots(),
            prop::option::of(arb_id().prop_filter("zero id means none", |id| *id != NO_NODE)),
            arb_text(IP_FIELD_LEN - 1),
            any::<[u16; 4]>(),
            any::<u8>(),
            any::<[u8; 3]>(),
        )
            .prop_map(
                |(
                    (kind, body),
                    [current_epoch, config_epoch, offset],
                    sender,
                    slots,
                    slaveof,
                    myip,
                    [port, pport, cport, flags],
                    state,
                    mflags,
                )| Message {
                    header: Header {
                        port,
                        kind,
                        current_epoch,
                        config_epoch,
                        offset,
                        sender,
                        slots,
                        slaveof,
                        myip,
                        pport,
                        cport,
                        flags,
                        state,
                        mflags,
                    },
                    body,
                },
            )
    }

    /// Whatever decodes must survive encode -> decode unchanged.
    fn check_stable(buf: &[u8]) {
        if let Ok(m) = decode(buf) {
            let again = encode(&m);
            assert_eq!(again.len(), encoded_len(&m));
            assert_eq!(decode(&again).as_ref(), Ok(&m));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn valid_messages_round_trip(m in arb_message()) {
            let bytes = encode(&m);
            prop_assert_eq!(bytes.len(), encoded_len(&m));
            prop_assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
            let back = decode(&bytes);
            prop_assert_eq!(back.as_ref(), Ok(&m));
            prop_assert_eq!(encode(&m), bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
            let _ = frame_len(&bytes);
            check_stable(&bytes);
        }

        /// Random bytes with a header that passes the first checks, so the per-type
        /// length logic sees garbage.
        #[test]
        fn plausible_headers_never_panic(
            kind in 0u16..12,
            count in prop_oneof![0u16..4, any::<u16>()],
            n_ext in prop_oneof![0u16..4, any::<u16>()],
            body in prop::collection::vec(any::<u8>(), 0..600),
            words in prop::collection::vec((0usize..600, any::<u32>()), 0..8),
        ) {
            let mut b = vec![0u8; HEADER_LEN];
            b[..4].copy_from_slice(SIGNATURE);
            b[8..10].copy_from_slice(&PROTO_VER.to_be_bytes());
            b[12..14].copy_from_slice(&kind.to_be_bytes());
            b[14..16].copy_from_slice(&count.to_be_bytes());
            b[2214..2216].copy_from_slice(&n_ext.to_be_bytes());
            b.extend_from_slice(&body);
            // Sprinkle plausible lengths into the body (extension and publish lengths).
            for (at, w) in words {
                let at = HEADER_LEN + at;
                if let Some(dst) = b.get_mut(at..at + 4) {
                    dst.copy_from_slice(&(w % 512).to_be_bytes());
                }
            }
            let n = (b.len() as u32).to_be_bytes();
            b[4..8].copy_from_slice(&n);
            check_stable(&b);
        }

        #[test]
        fn mutated_encodings_never_panic(
            m in arb_message(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut b = encode(&m);
            for (i, v) in edits {
                let i = i.index(b.len());
                b[i] = v;
            }
            if truncate {
                let n = cut.index(b.len());
                b.truncate(n);
            }
            let _ = frame_len(&b);
            check_stable(&b);
        }
    }
}
