//! The receiving side of a bulk connection: requests pipelined on one connection, answers read
//! in the same order.

use std::net::SocketAddr;

use commons_core::BlobHash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot};

use super::seal::{Direction, Seal, TAG_BYTES};
use super::{
    ANSWER_TIMEOUT, BulkError, HANDSHAKE_TIMEOUT, HEADER_BYTES, IDLE_TIMEOUT, PIPELINE,
    REQUEST_BYTES, Ticket, check_answer, encode_request,
};
use crate::handle::BlobChunk;
use crate::wire::{self, MAX_BLOB_CHUNK};

/// One connection to a peer's bulk port, requests pipelined on it. Cheap to clone; the
/// connection closes when every clone is dropped, after [`IDLE_TIMEOUT`] without a request, or
/// at the first failure.
#[derive(Debug, Clone)]
pub struct BulkLink {
    requests: mpsc::Sender<Pending>,
    sealed: bool,
}

#[derive(Debug)]
struct Pending {
    hash: BlobHash,
    offset: u64,
    len: u32,
    reply: oneshot::Sender<Result<BlobChunk, BulkError>>,
}

impl BulkLink {
    /// Connects to the bulk port at `addr` and presents the ticket's token; sealed when the
    /// ticket has a key.
    pub async fn connect(addr: SocketAddr, ticket: &Ticket) -> Result<BulkLink, BulkError> {
        let mut stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| BulkError::Timeout)??;
        stream.set_nodelay(true)?;
        stream.write_all(&ticket.token).await?;
        let (requests, rx) = mpsc::channel(PIPELINE);
        let seals = ticket.key.map(|k| {
            (
                Seal::new(&k, Direction::Request),
                Seal::new(&k, Direction::Answer),
            )
        });
        let sealed = seals.is_some();
        tokio::spawn(drive(stream, rx, seals));
        Ok(BulkLink { requests, sealed })
    }

    /// Whether the link has ended (nothing more can be asked on it).
    pub fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }

    /// Whether the link is sealed (encrypted and authenticated by keys only the two peers
    /// know): bytes that fail verification are then the peer's own.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// `len` (1 to 1 MiB) bytes of blob `hash` from `offset`, with the blob's length. Only the
    /// lengths are checked here; the caller verifies the bytes.
    pub async fn get(&self, hash: BlobHash, offset: u64, len: u32) -> Result<BlobChunk, BulkError> {
        if len == 0 || len > MAX_BLOB_CHUNK {
            return Err(BulkError::Protocol("request length not in 1..=1 MiB"));
        }
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            hash,
            offset,
            len,
            reply,
        };
        self.requests
            .send(pending)
            .await
            .map_err(|_| BulkError::Closed)?;
        answer.await.map_err(|_| BulkError::Closed)?
    }
}

/// Runs one link: sends requests as they come, reads the answers in the same order. The first
/// failure fails that request and ends the link (the requests behind it fail as `Closed`).
async fn drive(
    stream: TcpStream,
    mut requests: mpsc::Receiver<Pending>,
    seals: Option<(Seal, Seal)>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (mut request_seal, mut answer_seal) = match seals {
        Some((r, a)) => (Some(r), Some(a)),
        None => (None, None),
    };
    // Bounded: at most PIPELINE requests are between the two halves.
    let (sent_tx, mut sent) = mpsc::channel::<Pending>(PIPELINE);
    let writer = async move {
        loop {
            let next = match tokio::time::timeout(IDLE_TIMEOUT, requests.recv()).await {
                Ok(Some(p)) => p,
                Ok(None) | Err(_) => break,
            };
            let mut frame = [0u8; REQUEST_BYTES + TAG_BYTES];
            frame[..REQUEST_BYTES].copy_from_slice(&encode_request(
                &next.hash,
                next.offset,
                next.len,
            ));
            let frame = match &mut request_seal {
                Some(seal) => match seal.seal(&mut frame[..REQUEST_BYTES]) {
                    Ok(tag) => {
                        frame[REQUEST_BYTES..].copy_from_slice(&tag);
                        &frame[..]
                    }
                    Err(_) => {
                        let _ = next.reply.send(Err(BulkError::Closed));
                        break;
                    }
                },
                None => &frame[..REQUEST_BYTES],
            };
            if let Err(e) = wr.write_all(frame).await {
                let _ = next.reply.send(Err(e.into()));
                break;
            }
            if sent_tx.send(next).await.is_err() {
                break;
            }
        }
    };
    let reader = async move {
        while let Some(p) = sent.recv().await {
            let answer = match tokio::time::timeout(
                ANSWER_TIMEOUT,
                read_answer(&mut rd, &p, answer_seal.as_mut()),
            )
            .await
            {
                Ok(a) => a,
                Err(_) => Err(BulkError::Timeout),
            };
            let fatal = matches!(answer, Err(ref e) if !matches!(e, BulkError::NotFound));
            let _ = p.reply.send(answer);
            if fatal {
                break;
            }
        }
    };
    tokio::pin!(writer, reader);
    tokio::select! {
        // The reader failed: drop the writer (and the request queue with it).
        () = &mut reader => {}
        // Idle, or every handle dropped: answer what was sent, then close.
        () = &mut writer => reader.await,
    }
}

async fn read_answer(
    rd: &mut OwnedReadHalf,
    p: &Pending,
    mut seal: Option<&mut Seal>,
) -> Result<BlobChunk, BulkError> {
    let mut header = [0u8; HEADER_BYTES];
    rd.read_exact(&mut header).await?;
    if let Some(seal) = seal.as_deref_mut() {
        let mut tag = [0u8; TAG_BYTES];
        rd.read_exact(&mut tag).await?;
        seal.open(&mut header, &tag)
            .map_err(|_| BulkError::Protocol("an answer does not open with the ticket's key"))?;
    }
    let (total_len, n) = check_answer(&header, p.offset, p.len)
        .map_err(BulkError::Protocol)?
        .ok_or(BulkError::NotFound)?;
    let mut bytes = wire::chunk_buffer(n as usize);
    rd.read_exact(&mut bytes).await?;
    if let Some(seal) = seal
        && n > 0
    {
        let mut tag = [0u8; TAG_BYTES];
        rd.read_exact(&mut tag).await?;
        seal.open(&mut bytes, &tag)
            .map_err(|_| BulkError::Protocol("blob bytes do not open with the ticket's key"))?;
    }
    Ok(BlobChunk { total_len, bytes })
}
