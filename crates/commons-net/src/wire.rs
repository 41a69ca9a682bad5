//! The sync protocol `/commons/sync/2`: its messages, their limits and the codec.
//!
//! Each request and each response is one frame on its own stream: a 4-byte big-endian length,
//! then that many bytes of bincode (fixed-width little-endian integers, the same configuration as
//! records). The length is checked against the cap of the message type before anything is read
//! or allocated, decoding is bounded by the same cap, trailing bytes are refused, and the decoded
//! value is checked against the per-field limits below.

use std::io;

use bincode::{Decode, Encode};
use commons_core::reconcile;
use commons_core::record::MAX_RECORD_BYTES;
use commons_core::{BlobHash, LineageId, RecordId};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/commons/sync/2");

/// Largest request frame. The biggest legal request is a `Reconcile` at its caps (256 ranges,
/// 1024 ids: about 45 KiB); the cap leaves room for later fields while keeping what a peer can make us buffer per inbound
/// stream small.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest response frame. One blob chunk (1 MiB), a page of ids (128 KiB) or a batch of
/// records all fit; with at most [`MAX_CONCURRENT_STREAMS`] streams per connection this bounds
/// what one connection can make us hold.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Most record ids in one `GetRecords`: a catch-up page is fetched in a handful of requests.
pub const MAX_GET_RECORDS: usize = 256;
/// Most ids in one `Ids` page: 4096 × 32 bytes = 128 KiB, far under the response cap.
pub const MAX_LIST_IDS: u32 = 4096;
/// Largest blob chunk: big enough to stream at full speed, small enough that a chunk finishes
/// well within the request timeout on a slow link.
pub const MAX_BLOB_CHUNK: u32 = 1024 * 1024;
/// Most concurrent sync streams on one connection (request-response's own bound).
pub const MAX_CONCURRENT_STREAMS: usize = 32;

/// Bytes of framing and encoding overhead per record in a `Records` response (the length
/// prefix bincode writes before each byte string).
const RECORD_OVERHEAD: usize = 8;
/// Bytes of overhead for the response envelope (variant tag, vector length).
const RESPONSE_OVERHEAD: usize = 16;

/// Most blobs one `GetSmallBlobs` asks for.
pub const MAX_SMALL_BLOBS: usize = 48;
/// Largest blob a `SmallBlobs` answer carries whole (four 16 KiB chunk groups); larger ones are
/// streamed with `GetOutboard` and `GetBlob`. 48 of them stay under [`MAX_RESPONSE_BYTES`].
pub const MAX_SMALL_BLOB_BYTES: u64 = 64 * 1024;

/// One blob of a `SmallBlobs` answer, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum SmallBlob {
    /// The whole blob (at most [`MAX_SMALL_BLOB_BYTES`]); the asker checks it against the hash.
    Bytes(Vec<u8>),
    /// The blob is larger than [`MAX_SMALL_BLOB_BYTES`]: this many bytes, to be streamed.
    TooLarge(u64),
    /// The peer does not have it.
    Missing,
}

/// A sync request.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum SyncRequest {
    /// The records with these ids (1 to [`MAX_GET_RECORDS`]).
    GetRecords {
        /// The ids wanted.
        ids: Vec<RecordId>,
    },
    /// The ids of the records of a family (a lineage and its forks) in ascending byte order,
    /// strictly after `after`, at most `limit` (clamped to [`MAX_LIST_IDS`]) of them.
    ListIds {
        /// The family, named by its root lineage.
        family: LineageId,
        /// Resume after this id (exclusive); `None` starts from the beginning.
        after: Option<RecordId>,
        /// Most ids wanted.
        limit: u32,
    },
    /// Bytes `offset .. offset + len` of a blob (`len` 1 to [`MAX_BLOB_CHUNK`]).
    GetBlob {
        /// The blob.
        hash: BlobHash,
        /// Where the chunk starts.
        offset: u64,
        /// Most bytes wanted.
        len: u32,
    },
    /// Bytes `offset .. offset + len` of a blob's outboard (`len` 1 to [`MAX_BLOB_CHUNK`]): the
    /// BLAKE3 chaining values of its 16 KiB chunk groups, 32 bytes each (see `docs/protocol.md`).
    /// The answer also gives the blob's length, so `offset 0` is how a download starts.
    GetOutboard {
        /// The blob.
        hash: BlobHash,
        /// Where the piece starts in the outboard.
        offset: u64,
        /// Most bytes wanted.
        len: u32,
    },
    /// One round of set reconciliation of a family's record ids (see
    /// `commons_core::reconcile`): the initiator's message, within
    /// [`reconcile::REQUEST_LIMITS`]. Answered with `Reconcile`.
    Reconcile {
        /// The family, named by its root lineage.
        family: LineageId,
        /// Which round of the session this is, from 0 (below [`reconcile::MAX_ROUNDS`]).
        round: u32,
        /// The initiator's message.
        message: reconcile::Message,
    },
    /// Several small blobs whole (1 to [`MAX_SMALL_BLOBS`] hashes): what a catch-up of many
    /// small files asks for, one round trip for a megabyte of them instead of one per file.
    /// Answered with `SmallBlobs`.
    GetSmallBlobs {
        /// The blobs wanted.
        hashes: Vec<BlobHash>,
    },
    /// A ticket for the responder's bulk blob port (`crate::bulk`): blob ranges over a TCP
    /// connection sealed with a key from the ticket, checked by the asker against the blob's
    /// outboard. Answered with `BulkTicket`, or `NotFound` when the responder does not serve
    /// bulk transfers.
    OpenBulk {
        /// The asker would take a clear-text connection (the responder decides).
        clear: bool,
    },
}

/// A sync response.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum SyncResponse {
    /// Answer to `GetRecords`: the bytes of those of the requested records the peer has (each at
    /// most `MAX_RECORD_BYTES`), possibly fewer to stay under the response cap.
    Records(Vec<Vec<u8>>),
    /// Answer to `ListIds`: ids in ascending order, and whether more follow the last one.
    Ids {
        /// The ids.
        ids: Vec<RecordId>,
        /// Whether asking again after the last id gives more.
        more: bool,
    },
    /// Answer to `GetBlob`: the blob's total length and the requested bytes (fewer at the end).
    Blob {
        /// Length of the whole blob.
        total_len: u64,
        /// The chunk.
        bytes: Vec<u8>,
    },
    /// Answer to `GetOutboard`: the blob's length (which fixes the outboard's) and the requested
    /// piece of its outboard (fewer bytes at the end, none for a blob of one group).
    Outboard {
        /// Length of the blob (not of the outboard).
        total_len: u64,
        /// The piece.
        bytes: Vec<u8>,
    },
    /// Answer to `Reconcile`: the responder's message, within [`reconcile::RESPONSE_LIMITS`]
    /// (empty when nothing is left to do).
    Reconcile(reconcile::Message),
    /// The peer does not have what was asked for.
    NotFound,
    /// Answer to `GetSmallBlobs`: one entry per hash asked, in order; possibly fewer (the first
    /// ones) to stay under the response cap.
    SmallBlobs(Vec<SmallBlob>),
    /// Answer to `OpenBulk`: connect to this TCP port at the address of the libp2p connection
    /// and present the token (single use, valid for `crate::bulk::TICKET_TTL`).
    BulkTicket {
        /// The bulk port.
        port: u16,
        /// The token that opens one bulk connection.
        token: [u8; 32],
        /// The key that connection is sealed with (fresh for this ticket); `None`: clear text,
        /// given only to an asker that would take it.
        key: Option<[u8; 32]>,
    },
}

/// Why a sync message breaks the protocol's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame is over the cap for its message type.
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced or encoded length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The frame did not decode.
    #[error("malformed sync message: {0}")]
    Malformed(String),
    /// Bytes left after the message.
    #[error("sync message has {0} trailing bytes")]
    TrailingBytes(usize),
    /// A field is out of its bounds.
    #[error("sync message out of bounds: {0}")]
    OutOfBounds(&'static str),
    /// A reconciliation message breaks its caps or the order of its ranges.
    #[error("bad reconciliation message: {0}")]
    Reconcile(reconcile::MessageError),
}

impl From<WireError> for io::Error {
    fn from(e: WireError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

impl SyncRequest {
    /// Checks the per-field limits.
    pub fn check(&self) -> Result<(), WireError> {
        match self {
            SyncRequest::GetRecords { ids } if ids.is_empty() => {
                Err(WireError::OutOfBounds("GetRecords with no ids"))
            }
            SyncRequest::GetRecords { ids } if ids.len() > MAX_GET_RECORDS => {
                Err(WireError::OutOfBounds("GetRecords with too many ids"))
            }
            SyncRequest::ListIds { limit: 0, .. } => {
                Err(WireError::OutOfBounds("ListIds with limit 0"))
            }
            SyncRequest::GetBlob { len, .. } if *len == 0 || *len > MAX_BLOB_CHUNK => {
                Err(WireError::OutOfBounds("GetBlob length not in 1..=1 MiB"))
            }
            SyncRequest::GetSmallBlobs { hashes }
                if hashes.is_empty() || hashes.len() > MAX_SMALL_BLOBS =>
            {
                Err(WireError::OutOfBounds("GetSmallBlobs hashes not in 1..=48"))
            }
            SyncRequest::GetOutboard { len, .. } if *len == 0 || *len > MAX_BLOB_CHUNK => Err(
                WireError::OutOfBounds("GetOutboard length not in 1..=1 MiB"),
            ),
            SyncRequest::Reconcile { round, .. } if *round >= reconcile::MAX_ROUNDS => {
                Err(WireError::OutOfBounds("Reconcile round over the limit"))
            }
            SyncRequest::Reconcile { message, .. } => message
                .check(&reconcile::REQUEST_LIMITS)
                .map_err(WireError::Reconcile),
            _ => Ok(()),
        }
    }
}

impl SyncResponse {
    /// Checks the per-field limits.
    pub fn check(&self) -> Result<(), WireError> {
        match self {
            SyncResponse::Records(rs) if rs.len() > MAX_GET_RECORDS => {
                Err(WireError::OutOfBounds("more records than can be requested"))
            }
            SyncResponse::Records(rs) if rs.iter().any(|r| r.len() > MAX_RECORD_BYTES) => {
                Err(WireError::OutOfBounds("record over the size limit"))
            }
            SyncResponse::Ids { ids, .. } if ids.len() > MAX_LIST_IDS as usize => {
                Err(WireError::OutOfBounds("more ids than a page may hold"))
            }
            SyncResponse::Blob { bytes, .. } if bytes.len() > MAX_BLOB_CHUNK as usize => {
                Err(WireError::OutOfBounds("blob chunk over 1 MiB"))
            }
            SyncResponse::SmallBlobs(blobs) if blobs.len() > MAX_SMALL_BLOBS => Err(
                WireError::OutOfBounds("more small blobs than can be asked for"),
            ),
            SyncResponse::SmallBlobs(blobs)
                if blobs.iter().any(|b| match b {
                    SmallBlob::Bytes(bytes) => bytes.len() as u64 > MAX_SMALL_BLOB_BYTES,
                    SmallBlob::TooLarge(len) => *len <= MAX_SMALL_BLOB_BYTES,
                    SmallBlob::Missing => false,
                }) =>
            {
                Err(WireError::OutOfBounds("small blob over 64 KiB"))
            }
            SyncResponse::Outboard { bytes, .. } if bytes.len() > MAX_BLOB_CHUNK as usize => {
                Err(WireError::OutOfBounds("outboard piece over 1 MiB"))
            }
            SyncResponse::Reconcile(message) => message
                .check(&reconcile::RESPONSE_LIMITS)
                .map_err(WireError::Reconcile),
            _ => Ok(()),
        }
    }

    /// Trims an answer so that it fits the request it answers and the response cap: drops
    /// records that are oversized or past the byte budget, cuts an id page to the limit (setting
    /// `more`), cuts a blob chunk to the requested length. The node's answer goes through this
    /// before it is sent, so a careless answer can never break the protocol.
    pub fn fit_to(self, request: &SyncRequest) -> SyncResponse {
        match (self, request) {
            (SyncResponse::Records(rs), SyncRequest::GetRecords { ids }) => {
                let mut budget = MAX_RESPONSE_BYTES - RESPONSE_OVERHEAD;
                let mut out = Vec::with_capacity(rs.len().min(ids.len()));
                for r in rs {
                    if out.len() == ids.len() || out.len() == MAX_GET_RECORDS {
                        break;
                    }
                    let cost = r.len() + RECORD_OVERHEAD;
                    if r.len() > MAX_RECORD_BYTES || cost > budget {
                        continue;
                    }
                    budget -= cost;
                    out.push(r);
                }
                SyncResponse::Records(out)
            }
            (SyncResponse::Ids { mut ids, more }, SyncRequest::ListIds { limit, .. }) => {
                let cap = (*limit).min(MAX_LIST_IDS) as usize;
                let cut = ids.len() > cap;
                ids.truncate(cap);
                SyncResponse::Ids {
                    ids,
                    more: more || cut,
                }
            }
            (
                SyncResponse::Blob {
                    total_len,
                    mut bytes,
                },
                SyncRequest::GetBlob { len, .. },
            ) => {
                bytes.truncate((*len).min(MAX_BLOB_CHUNK) as usize);
                SyncResponse::Blob { total_len, bytes }
            }
            (SyncResponse::SmallBlobs(blobs), SyncRequest::GetSmallBlobs { hashes }) => {
                let mut budget = MAX_RESPONSE_BYTES - RESPONSE_OVERHEAD;
                let mut out = Vec::with_capacity(blobs.len().min(hashes.len()));
                for blob in blobs.into_iter().take(hashes.len().min(MAX_SMALL_BLOBS)) {
                    let cost = match &blob {
                        SmallBlob::Bytes(b) => b.len() + RECORD_OVERHEAD + 4,
                        _ => RECORD_OVERHEAD + 4,
                    };
                    let fits = match &blob {
                        SmallBlob::Bytes(b) => b.len() as u64 <= MAX_SMALL_BLOB_BYTES,
                        SmallBlob::TooLarge(len) => *len > MAX_SMALL_BLOB_BYTES,
                        SmallBlob::Missing => true,
                    };
                    // In order: what does not fit ends the answer, the asker asks again.
                    if !fits || cost > budget {
                        break;
                    }
                    budget -= cost;
                    out.push(blob);
                }
                SyncResponse::SmallBlobs(out)
            }
            (
                SyncResponse::Outboard {
                    total_len,
                    mut bytes,
                },
                SyncRequest::GetOutboard { len, .. },
            ) => {
                bytes.truncate((*len).min(MAX_BLOB_CHUNK) as usize);
                SyncResponse::Outboard { total_len, bytes }
            }
            (other, _) => other,
        }
    }
}

fn wire_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_little_endian()
        .with_limit::<MAX_RESPONSE_BYTES>()
}

/// Encodes a message, refusing it if the frame would exceed `max`.
pub fn encode<T: Encode>(value: &T, max: usize) -> Result<Vec<u8>, WireError> {
    let bytes = bincode::encode_to_vec(value, wire_config())
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if bytes.len() > max {
        return Err(WireError::FrameTooLarge {
            len: bytes.len(),
            max,
        });
    }
    Ok(bytes)
}

/// Decodes a message, refusing frames over `max` and trailing bytes.
pub fn decode<T: Decode<()>>(bytes: &[u8], max: usize) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::FrameTooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (value, used): (T, usize) = bincode::decode_from_slice(bytes, wire_config())
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(WireError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

/// Reads a frame's length prefix and checks it against the cap before anything else is read.
async fn read_frame_len<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<usize> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(WireError::FrameTooLarge { len, max }.into());
    }
    Ok(len)
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let len = read_frame_len(io, max).await?;
    let mut buf = vec![0; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Chunk buffers kept for reuse, at most this many (16 MiB at 1 MiB each): a transfer allocates
/// and frees a 1 MiB buffer per request on each side, and with glibc's allocator every free of one
/// tends to hand the pages back to the kernel (a trim of the heap), every allocation to take them
/// again (a page fault and a zeroing per 4 KiB). Recycled buffers skip both.
pub const CHUNK_POOL_BUFFERS: usize = 16;
/// Smallest buffer worth keeping in the pool.
const CHUNK_POOL_MIN_BYTES: usize = 64 * 1024;

static CHUNK_POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// A buffer of `len` bytes for a blob chunk or outboard piece, taken from the pool of recycled
/// buffers when one is there. Its contents are unspecified (bytes of an earlier chunk): fill it
/// whole (`read_exact`) before use, and drop it if that fails.
pub fn chunk_buffer(len: usize) -> Vec<u8> {
    let recycled = CHUNK_POOL.lock().unwrap_or_else(|p| p.into_inner()).pop();
    match recycled {
        Some(mut buf) => {
            // Truncating keeps what is there; only a longer length writes zeros.
            buf.resize(len, 0);
            buf
        }
        None => vec![0; len],
    }
}

/// Gives a chunk buffer back for [`chunk_buffer`] to reuse (kept only if the pool has room and
/// the buffer is of a chunk's size).
pub fn recycle_chunk(buf: Vec<u8>) {
    let cap = buf.capacity();
    if !(CHUNK_POOL_MIN_BYTES..=MAX_BLOB_CHUNK as usize).contains(&cap) {
        return;
    }
    let mut pool = CHUNK_POOL.lock().unwrap_or_else(|p| p.into_inner());
    if pool.len() < CHUNK_POOL_BUFFERS {
        pool.push(buf);
    }
}

/// bincode's variant index of [`SyncResponse::Blob`] (declaration order, a fixed-width `u32`).
const BLOB_TAG: u32 = 2;
/// bincode's variant index of [`SyncResponse::Outboard`].
const OUTBOARD_TAG: u32 = 3;
/// Bytes before the payload in the encoding of a `Blob` or `Outboard` response: variant index
/// (`u32`), `total_len` (`u64`), length of `bytes` (`u64`).
const CHUNK_HEAD: usize = 4 + 8 + 8;

/// The frame header (length prefix and bincode fields) of a `Blob` or `Outboard` response whose
/// payload is `payload_len` bytes: exactly the bytes [`encode`] would put before the payload.
fn chunk_frame_head(
    tag: u32,
    total_len: u64,
    payload_len: usize,
) -> io::Result<[u8; 4 + CHUNK_HEAD]> {
    let frame = CHUNK_HEAD + payload_len;
    if frame > MAX_RESPONSE_BYTES {
        return Err(WireError::FrameTooLarge {
            len: frame,
            max: MAX_RESPONSE_BYTES,
        }
        .into());
    }
    let mut head = [0u8; 4 + CHUNK_HEAD];
    // Under the cap, so it fits a u32.
    head[..4].copy_from_slice(&(frame as u32).to_be_bytes());
    head[4..8].copy_from_slice(&tag.to_le_bytes());
    head[8..16].copy_from_slice(&total_len.to_le_bytes());
    head[16..24].copy_from_slice(&(payload_len as u64).to_le_bytes());
    Ok(head)
}

/// Reads a response frame. A `Blob` or `Outboard` answer (nearly all the bytes a node receives)
/// is read straight into its own buffer: its fixed-width header is read first and the payload
/// lands in the vector the response keeps, with no intermediate frame buffer and no copy by the
/// decoder. Anything else, or a chunk whose header does not add up to the frame's length, goes
/// through [`decode`] with every check.
async fn read_response_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<SyncResponse> {
    let len = read_frame_len(io, MAX_RESPONSE_BYTES).await?;
    if len < CHUNK_HEAD {
        let mut frame = vec![0; len];
        io.read_exact(&mut frame).await?;
        return Ok(decode(&frame, MAX_RESPONSE_BYTES)?);
    }
    let mut head = [0u8; CHUNK_HEAD];
    io.read_exact(&mut head).await?;
    let field = |range: std::ops::Range<usize>| {
        let mut b = [0u8; 8];
        b[..range.len()].copy_from_slice(&head[range]);
        u64::from_le_bytes(b)
    };
    let tag = field(0..4) as u32;
    let total_len = field(4..12);
    let payload = field(12..20);
    if (tag == BLOB_TAG || tag == OUTBOARD_TAG) && payload == (len - CHUNK_HEAD) as u64 {
        let mut bytes = chunk_buffer(len - CHUNK_HEAD);
        io.read_exact(&mut bytes).await?;
        return Ok(if tag == BLOB_TAG {
            SyncResponse::Blob { total_len, bytes }
        } else {
            SyncResponse::Outboard { total_len, bytes }
        });
    }
    let mut frame = vec![0; len];
    frame[..CHUNK_HEAD].copy_from_slice(&head);
    io.read_exact(&mut frame[CHUNK_HEAD..]).await?;
    Ok(decode(&frame, MAX_RESPONSE_BYTES)?)
}

/// Writes a response frame. A `Blob` or `Outboard` answer is written as its header and then its
/// payload straight from the response's own buffer (the same bytes [`encode`] gives, without
/// copying the payload into an encoded frame first).
async fn write_response_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    resp: &SyncResponse,
) -> io::Result<()> {
    let (tag, total_len, bytes) = match resp {
        SyncResponse::Blob { total_len, bytes } => (BLOB_TAG, *total_len, bytes),
        SyncResponse::Outboard { total_len, bytes } => (OUTBOARD_TAG, *total_len, bytes),
        other => return write_frame(io, &encode(other, MAX_RESPONSE_BYTES)?).await,
    };
    let head = chunk_frame_head(tag, total_len, bytes.len())?;
    io.write_all(&head).await?;
    io.write_all(bytes).await?;
    io.flush().await
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    // `encode` already refused anything over the caps, which are far below u32::MAX.
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame longer than u32::MAX"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.flush().await
}

/// The request-response codec of `/commons/sync/2`.
#[derive(Debug, Clone, Default)]
pub struct SyncCodec;

impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<SyncRequest> {
        let frame = read_frame(io, MAX_REQUEST_BYTES).await?;
        let req: SyncRequest = decode(&frame, MAX_REQUEST_BYTES)?;
        req.check()?;
        Ok(req)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<SyncResponse> {
        let resp = read_response_frame(io).await?;
        resp.check()?;
        Ok(resp)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: SyncRequest,
    ) -> io::Result<()> {
        write_frame(io, &encode(&req, MAX_REQUEST_BYTES)?).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: SyncResponse,
    ) -> io::Result<()> {
        let result = write_response_frame(io, &resp).await;
        if let SyncResponse::Blob { bytes, .. } | SyncResponse::Outboard { bytes, .. } = resp {
            recycle_chunk(bytes);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let reqs = [
            SyncRequest::GetRecords {
                ids: vec![RecordId([1; 32]); 3],
            },
            SyncRequest::ListIds {
                family: LineageId([2; 32]),
                after: Some(RecordId([3; 32])),
                limit: 10,
            },
            SyncRequest::GetBlob {
                hash: BlobHash([4; 32]),
                offset: 5,
                len: 6,
            },
        ];
        for r in reqs {
            let b = encode(&r, MAX_REQUEST_BYTES).expect("encodes");
            assert_eq!(
                decode::<SyncRequest>(&b, MAX_REQUEST_BYTES).expect("decodes"),
                r
            );
        }
        let resp = SyncResponse::Ids {
            ids: vec![RecordId([1; 32])],
            more: true,
        };
        let b = encode(&resp, MAX_RESPONSE_BYTES).expect("encodes");
        assert_eq!(
            decode::<SyncResponse>(&b, MAX_RESPONSE_BYTES).expect("decodes"),
            resp
        );
        let ob = SyncRequest::GetOutboard {
            hash: BlobHash([5; 32]),
            offset: 64,
            len: MAX_BLOB_CHUNK,
        };
        let b = encode(&ob, MAX_REQUEST_BYTES).expect("encodes");
        assert_eq!(
            decode::<SyncRequest>(&b, MAX_REQUEST_BYTES).expect("decodes"),
            ob
        );
        // The largest outboard piece fits the response cap.
        let piece = SyncResponse::Outboard {
            total_len: 1 << 40,
            bytes: vec![7; MAX_BLOB_CHUNK as usize],
        };
        let b = encode(&piece, MAX_RESPONSE_BYTES).expect("fits");
        assert_eq!(
            decode::<SyncResponse>(&b, MAX_RESPONSE_BYTES).expect("decodes"),
            piece
        );
        let over = SyncRequest::GetOutboard {
            hash: BlobHash([5; 32]),
            offset: 0,
            len: MAX_BLOB_CHUNK + 1,
        };
        assert!(over.check().is_err());
    }

    /// The whole frame [`write_frame`] would send for `resp`: the reference encoding.
    fn reference_frame(resp: &SyncResponse) -> Vec<u8> {
        let body = encode(resp, MAX_RESPONSE_BYTES).expect("encodes");
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        frame
    }

    #[test]
    fn chunk_responses_take_the_direct_path_with_the_same_bytes() {
        use futures::executor::block_on;
        use futures::io::Cursor;
        let responses = [
            SyncResponse::Blob {
                total_len: 1 << 33,
                bytes: (0..MAX_BLOB_CHUNK).map(|i| i as u8).collect(),
            },
            SyncResponse::Blob {
                total_len: 0,
                bytes: vec![],
            },
            SyncResponse::Outboard {
                total_len: 12345,
                bytes: vec![9; 64],
            },
            SyncResponse::NotFound,
            SyncResponse::Ids {
                ids: vec![RecordId([1; 32]); 3],
                more: false,
            },
            SyncResponse::Records(vec![vec![1, 2, 3]]),
        ];
        for resp in responses {
            // Written as bincode would write it...
            let mut written = Vec::new();
            block_on(write_response_frame(&mut written, &resp)).expect("writes");
            assert_eq!(written, reference_frame(&resp));
            // ...and read back as bincode would decode it.
            let read = block_on(read_response_frame(&mut Cursor::new(written))).expect("reads");
            assert_eq!(read, resp);
        }
        // A chunk header that does not add up to the frame falls back to the full decoder,
        // which refuses it.
        let mut frame = reference_frame(&SyncResponse::Blob {
            total_len: 10,
            bytes: vec![1; 10],
        });
        frame.push(0);
        let len = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        assert!(block_on(read_response_frame(&mut Cursor::new(frame))).is_err());
        // An oversized length prefix is refused before anything is read.
        let mut huge = ((MAX_RESPONSE_BYTES + 1) as u32).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 32]);
        assert!(block_on(read_response_frame(&mut Cursor::new(huge))).is_err());
    }

    #[test]
    fn decoding_refuses_trailing_bytes_and_oversized_frames() {
        let mut b = encode(&SyncResponse::NotFound, MAX_RESPONSE_BYTES).expect("encodes");
        b.push(0);
        assert_eq!(
            decode::<SyncResponse>(&b, MAX_RESPONSE_BYTES),
            Err(WireError::TrailingBytes(1))
        );
        let big = vec![0u8; MAX_REQUEST_BYTES + 1];
        assert!(matches!(
            decode::<SyncRequest>(&big, MAX_REQUEST_BYTES),
            Err(WireError::FrameTooLarge { .. })
        ));
        // A vector claiming 2^60 elements must fail without allocating.
        let mut claim = vec![0u8; 4];
        claim.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode::<SyncResponse>(&claim, MAX_RESPONSE_BYTES).is_err());
    }

    #[test]
    fn limits_are_checked() {
        let too_many = SyncRequest::GetRecords {
            ids: vec![RecordId([0; 32]); MAX_GET_RECORDS + 1],
        };
        assert!(too_many.check().is_err());
        // The largest legal request fits its cap.
        let largest = SyncRequest::GetRecords {
            ids: vec![RecordId([0; 32]); MAX_GET_RECORDS],
        };
        assert!(encode(&largest, MAX_REQUEST_BYTES).is_ok());
        let chunk = SyncRequest::GetBlob {
            hash: BlobHash([0; 32]),
            offset: 0,
            len: MAX_BLOB_CHUNK + 1,
        };
        assert!(chunk.check().is_err());
    }

    #[test]
    fn fit_to_keeps_answers_within_the_caps() {
        let req = SyncRequest::GetRecords {
            ids: vec![RecordId([0; 32]); MAX_GET_RECORDS],
        };
        let answer = SyncResponse::Records(vec![vec![1u8; MAX_RECORD_BYTES]; MAX_GET_RECORDS]);
        let fitted = answer.fit_to(&req);
        let b = encode(&fitted, MAX_RESPONSE_BYTES).expect("fits the cap");
        assert!(b.len() <= MAX_RESPONSE_BYTES);
        match fitted {
            SyncResponse::Records(rs) => assert!(rs.len() > 20 && rs.len() < MAX_GET_RECORDS),
            other => panic!("unexpected {other:?}"),
        }

        let req = SyncRequest::ListIds {
            family: LineageId([0; 32]),
            after: None,
            limit: 2,
        };
        let fitted = SyncResponse::Ids {
            ids: vec![RecordId([0; 32]); 5],
            more: false,
        }
        .fit_to(&req);
        assert_eq!(
            fitted,
            SyncResponse::Ids {
                ids: vec![RecordId([0; 32]); 2],
                more: true
            }
        );
    }
}
