//! Answering peers: their sync requests (records, id pages, blobs, outboards, reconciliation,
//! bulk tickets) read from the store on a blocking thread, and the bulk port's blob source.

use commons_core::BlobHash;
use commons_net::bulk::{BlobRange, BlobSource};
use commons_net::wire::{self, MAX_BLOB_CHUNK};
use commons_net::{PeerId, SmallBlob, SyncRequest, SyncResponse};
use commons_store::outboard::outboard_len;
use commons_store::scrub::Checked;
use commons_store::{BlobReader, Store};

use crate::downloader::Downloads;
use crate::service::Ctx;

/// A stored blob for serving, hashed again at the store's cadence (`commons_store::scrub`). A
/// damaged copy is moved aside by the store and wanted again here, so the downloader fetches a
/// good one: this node does not feed its peers bad bytes when its disk rots.
pub fn open_for_serving(
    store: &Store,
    downloads: &Downloads,
    hash: &BlobHash,
) -> Option<BlobReader> {
    match store.blobs().open_checked(hash) {
        Ok(Checked::Good(blob)) => Some(blob),
        Ok(Checked::Absent) => None,
        Ok(Checked::Damaged) => {
            want_again(store, downloads, vec![*hash]);
            None
        }
        Err(e) => {
            tracing::warn!(target: "commons_node::blobs", blob = %hash, error = %e, "cannot read a stored blob");
            None
        }
    }
}

/// Puts blobs found damaged at rest back on the wanted list (durable) and before the downloader.
/// Which lineage named them is not known here: they are wanted under the zero lineage id.
pub fn want_again(store: &Store, downloads: &Downloads, hashes: Vec<BlobHash>) {
    let wanted: Vec<_> = hashes
        .into_iter()
        .map(|h| (h, commons_core::LineageId([0; 32])))
        .collect();
    if let Err(e) = store.want_blobs(wanted.clone()) {
        tracing::warn!(target: "commons_node::blobs", error = %e, "cannot list damaged blobs as wanted");
    }
    downloads.want(None, wanted);
}

/// Answers a peer's sync request from the store.
pub async fn answer(ctx: &Ctx, peer: PeerId, request: SyncRequest) -> SyncResponse {
    let store = ctx.store.clone();
    let reconcile = ctx.reconcile.clone();
    let blobs = ctx.blobs.clone();
    let blocked = ctx.blocked.clone();
    let downloads = ctx.downloads.clone();
    let result =
        tokio::task::spawn_blocking(move || -> Result<SyncResponse, commons_store::StoreError> {
            Ok(match request {
                SyncRequest::GetRecords { ids } => {
                    let found = store.get_many(ids)?;
                    SyncResponse::Records(
                        found
                            .into_iter()
                            .flatten()
                            // Blocked authors' records are not forwarded, by gossip or sync.
                            .filter(|r| !blocked.blocks_author(&r.author()))
                            .map(|r| r.bytes().to_vec())
                            .collect(),
                    )
                }
                SyncRequest::ListIds {
                    family,
                    after,
                    limit,
                } => reconcile.page(&store, family, after, limit),
                SyncRequest::GetBlob { hash, offset, len } => {
                    read_chunk(&store, &downloads, hash, offset, len)
                }
                SyncRequest::GetSmallBlobs { hashes } => read_small(&store, &downloads, &hashes),
                SyncRequest::GetOutboard { hash, offset, len } => {
                    read_outboard(&store, hash, offset, len)
                }
                SyncRequest::Reconcile {
                    family, message, ..
                } => reconcile.answer(&store, family, &message),
                SyncRequest::OpenBulk { clear } => blobs.bulk_ticket(peer, clear),
            })
        })
        .await;
    match result {
        Ok(Ok(r)) => r,
        _ => SyncResponse::NotFound,
    }
}

fn read_chunk(
    store: &Store,
    downloads: &Downloads,
    hash: BlobHash,
    offset: u64,
    len: u32,
) -> SyncResponse {
    let Some(blob) = open_for_serving(store, downloads, &hash) else {
        return SyncResponse::NotFound;
    };
    let total = blob.len();
    let len =
        u64::from(len.min(commons_net::wire::MAX_BLOB_CHUNK)).min(total.saturating_sub(offset));
    let mut bytes = commons_net::wire::chunk_buffer(len as usize);
    if blob.read_exact_at(&mut bytes, offset).is_err() {
        return SyncResponse::NotFound;
    }
    SyncResponse::Blob {
        total_len: total,
        bytes,
    }
}

/// Answers `GetSmallBlobs` from the blob store: each blob whole, in the order asked, until the
/// answer would pass the response cap (the asker asks again for the rest).
pub fn read_small(store: &Store, downloads: &Downloads, hashes: &[BlobHash]) -> SyncResponse {
    let mut budget = wire::MAX_RESPONSE_BYTES as u64 / 4 * 3;
    let mut out = Vec::with_capacity(hashes.len());
    for hash in hashes {
        let blob = match open_for_serving(store, downloads, hash) {
            Some(b) => b,
            None => {
                out.push(SmallBlob::Missing);
                continue;
            }
        };
        if blob.len() > wire::MAX_SMALL_BLOB_BYTES {
            out.push(SmallBlob::TooLarge(blob.len()));
            continue;
        }
        if blob.len() > budget {
            break;
        }
        let mut bytes = vec![0; blob.len() as usize];
        if blob.read_exact_at(&mut bytes, 0).is_err() {
            out.push(SmallBlob::Missing);
            continue;
        }
        budget -= blob.len();
        out.push(SmallBlob::Bytes(bytes));
    }
    SyncResponse::SmallBlobs(out)
}

/// Answers `GetOutboard` from the blob store (computing a missing outboard first).
pub fn read_outboard(store: &Store, hash: BlobHash, offset: u64, len: u32) -> SyncResponse {
    let blobs = store.blobs();
    let Ok(Some(total_len)) = blobs.len_of(&hash) else {
        return SyncResponse::NotFound;
    };
    let Ok(Some(file)) = blobs.open_outboard(&hash) else {
        return SyncResponse::NotFound;
    };
    let ob_len = outboard_len(total_len);
    if file.len().ok() != Some(ob_len) {
        tracing::warn!(target: "commons_node::blobs", blob = %hash, "outboard of the wrong length; not served");
        return SyncResponse::NotFound;
    }
    let n = u64::from(len.min(MAX_BLOB_CHUNK)).min(ob_len.saturating_sub(offset));
    let mut bytes = wire::chunk_buffer(n as usize);
    if file.read_exact_at(&mut bytes, offset).is_err() {
        return SyncResponse::NotFound;
    }
    SyncResponse::Outboard { total_len, bytes }
}

/// Serves the bulk port from the blob store (`commons_net::bulk`).
#[derive(Debug)]
pub struct StoreSource {
    /// The store.
    pub store: Store,
    /// Where damaged blobs are wanted again.
    pub downloads: Downloads,
}

impl BlobSource for StoreSource {
    fn open(&self, hash: &BlobHash) -> Option<BlobRange> {
        let blob = open_for_serving(&self.store, &self.downloads, hash)?;
        let (file, start) = blob.file_range();
        Some(BlobRange {
            file,
            start,
            len: blob.len(),
        })
    }
}
