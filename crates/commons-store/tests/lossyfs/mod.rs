//! A FUSE file system that models a power cut: file data written through it lives in memory
//! until the file is fsynced, and [`Control::cut`] throws away everything not yet fsynced.
//!
//! It passes every operation through to a backing directory, with one difference: the bytes a
//! `write` or a truncation changes are kept as dirty 4 KiB pages of the inode, and reach the
//! backing file only on `fsync`/`fdatasync` of that file (which then `sync_all`s it). Reads see
//! the dirty pages, as they would through a kernel page cache. Directory operations (create,
//! mkdir, rename, unlink) reach the backing directory at once, the way a journalling file system
//! usually commits them — so what the model drops is exactly what `fsync` promises: file data and
//! size. `sync_file_range` sends nothing to a FUSE file system, so data "flushed" by it alone is
//! lost in a cut, as it may be on a real disk with a volatile cache or unjournalled extents.
//!
//! After [`Control::cut`], every operation fails with EIO (the machine is off): nothing the
//! process does afterwards reaches the backing directory, which then holds what a disk would
//! hold after the power came back. Files are opened with `FOPEN_DIRECT_IO` and attributes are
//! never cached, so the kernel keeps no copy of its own.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

const PAGE: u64 = 4096;
/// Nothing is cached by the kernel: every lookup and getattr comes here.
const TTL: Duration = Duration::ZERO;

/// What the test holds on a mounted file system.
pub struct Control {
    cut: AtomicBool,
    inner: Mutex<Inner>,
    /// Dirty bytes dropped by the cut.
    dropped: AtomicU64,
    /// Files fsynced through the file system.
    fsyncs: AtomicU64,
}

impl Control {
    /// Pulls the plug: every byte not fsynced is gone, and every later operation fails.
    pub fn cut(&self) {
        let mut inner = self.inner.lock().unwrap();
        self.cut.store(true, Ordering::SeqCst);
        let dirty: u64 = inner
            .files
            .values()
            .map(|f| f.pages.len() as u64 * PAGE)
            .sum();
        self.dropped.fetch_add(dirty, Ordering::SeqCst);
        inner.files.clear();
    }

    /// Dirty bytes the cut threw away.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }

    /// Number of fsyncs of files seen so far.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::SeqCst)
    }
}

/// A mounted lossy file system; unmounted by [`Mounted::unmount`] (or on drop).
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    /// The switch.
    pub control: Arc<Control>,
}

impl Mounted {
    /// Unmounts (every process using the mount must be gone).
    pub fn unmount(mut self) {
        if let Some(s) = self.session.take() {
            s.umount_and_join().expect("unmount the lossy file system");
        }
    }
}

/// Mounts a lossy view of `backing` at `mountpoint`.
pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<Mounted> {
    let control = Arc::new(Control {
        cut: AtomicBool::new(false),
        inner: Mutex::new(Inner::new(backing)),
        dropped: AtomicU64::new(0),
        fsyncs: AtomicU64::new(0),
    });
    let mut config = Config::default();
    config
        .mount_options
        .push(MountOption::FSName("commons-lossyfs".into()));
    let session = fuser::spawn_mount(
        LossyFs {
            control: control.clone(),
        },
        mountpoint,
        &config,
    )?;
    Ok(Mounted {
        session: Some(session),
        control,
    })
}

struct Inner {
    root: PathBuf,
    /// Inode number → path relative to `root`.
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_ino: u64,
    /// Unsynced state of files written since their last fsync.
    files: HashMap<u64, Dirty>,
}

/// A file's unsynced changes.
struct Dirty {
    /// Full contents of each page changed since the last fsync.
    pages: BTreeMap<u64, Vec<u8>>,
    /// The file's size as processes see it.
    size: u64,
    /// Bytes of the backing file still valid (a truncation lowers it until the next fsync).
    valid: u64,
}

impl Inner {
    fn new(root: &Path) -> Inner {
        let mut inner = Inner {
            root: root.to_path_buf(),
            paths: HashMap::new(),
            inodes: HashMap::new(),
            next_ino: 2,
            files: HashMap::new(),
        };
        inner.paths.insert(1, PathBuf::new());
        inner.inodes.insert(PathBuf::new(), 1);
        inner
    }

    fn rel(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    fn ino_of(&mut self, rel: &Path) -> u64 {
        if let Some(&i) = self.inodes.get(rel) {
            return i;
        }
        let i = self.next_ino;
        self.next_ino += 1;
        self.paths.insert(i, rel.to_path_buf());
        self.inodes.insert(rel.to_path_buf(), i);
        i
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.rel(parent)?.join(name))
    }

    fn attr(&self, ino: u64, rel: &Path) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(self.full(rel)).map_err(Errno::from)?;
        let kind = if meta.is_dir() {
            FileType::Directory
        } else if meta.file_type().is_symlink() {
            FileType::Symlink
        } else {
            FileType::RegularFile
        };
        let size = self.files.get(&ino).map_or(meta.len(), |d| d.size);
        let time = |s: i64| UNIX_EPOCH + Duration::from_secs(s.max(0) as u64);
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time(meta.atime()),
            mtime: time(meta.mtime()),
            ctime: time(meta.ctime()),
            crtime: time(meta.ctime()),
            kind,
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    /// The dirty state of `ino`, created from the backing file on first use.
    fn dirty(&mut self, ino: u64) -> Result<&mut Dirty, Errno> {
        if !self.files.contains_key(&ino) {
            let rel = self.paths.get(&ino).ok_or(Errno::ENOENT)?;
            let len = fs::metadata(self.root.join(rel))
                .map_err(Errno::from)?
                .len();
            self.files.insert(
                ino,
                Dirty {
                    pages: BTreeMap::new(),
                    size: len,
                    valid: len,
                },
            );
        }
        Ok(self.files.get_mut(&ino).expect("inserted above"))
    }

    /// Reads `[offset, offset + len)` of `ino` as processes see it.
    fn read(&self, ino: u64, offset: u64, len: u64) -> Result<Vec<u8>, Errno> {
        let rel = self.paths.get(&ino).ok_or(Errno::ENOENT)?;
        let backing = File::open(self.root.join(rel)).map_err(Errno::from)?;
        let backing_len = backing.metadata().map_err(Errno::from)?.len();
        let (size, valid) = match self.files.get(&ino) {
            Some(d) => (d.size, d.valid.min(backing_len)),
            None => (backing_len, backing_len),
        };
        let end = (offset + len).min(size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let page = at / PAGE;
            let in_page = (at % PAGE) as usize;
            let take = ((PAGE - at % PAGE).min(end - at)) as usize;
            match self.files.get(&ino).and_then(|d| d.pages.get(&page)) {
                Some(p) => out.extend_from_slice(&p[in_page..in_page + take]),
                None => {
                    let mut buf = vec![0u8; take];
                    if at < valid {
                        let n = ((valid - at) as usize).min(take);
                        backing
                            .read_exact_at(&mut buf[..n], at)
                            .map_err(Errno::from)?;
                    }
                    out.extend_from_slice(&buf);
                }
            }
            at += take as u64;
        }
        Ok(out)
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        self.dirty(ino)?;
        let mut at = offset;
        let end = offset + data.len() as u64;
        while at < end {
            let page = at / PAGE;
            let in_page = (at % PAGE) as usize;
            let take = ((PAGE - at % PAGE).min(end - at)) as usize;
            let has_page = self.files[&ino].pages.contains_key(&page);
            if !has_page {
                let current = self.read(ino, page * PAGE, PAGE)?;
                let mut p = vec![0u8; PAGE as usize];
                p[..current.len()].copy_from_slice(&current);
                self.files
                    .get_mut(&ino)
                    .expect("dirty")
                    .pages
                    .insert(page, p);
            }
            let d = self.files.get_mut(&ino).expect("dirty");
            let src = (at - offset) as usize;
            d.pages.get_mut(&page).expect("page")[in_page..in_page + take]
                .copy_from_slice(&data[src..src + take]);
            at += take as u64;
        }
        let d = self.files.get_mut(&ino).expect("dirty");
        d.size = d.size.max(end);
        Ok(())
    }

    fn truncate(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let d = self.dirty(ino)?;
        if size < d.size {
            d.valid = d.valid.min(size);
            let first_gone = size.div_ceil(PAGE);
            d.pages.retain(|&p, _| p < first_gone);
            // Bytes past the new end read as zeros if the file grows again: cleared in a dirty
            // page, and past `valid` in the backing file.
            if let Some(p) = d.pages.get_mut(&(size / PAGE)) {
                p[(size % PAGE) as usize..].fill(0);
            }
        }
        d.size = size;
        Ok(())
    }

    /// Makes `ino`'s data durable in the backing file.
    fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        let Some(d) = self.files.remove(&ino) else {
            return Ok(());
        };
        let Some(rel) = self.paths.get(&ino) else {
            return Ok(());
        };
        let f = match OpenOptions::new().write(true).open(self.root.join(rel)) {
            Ok(f) => f,
            // Unlinked while open: nothing to keep.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Errno::from(e)),
        };
        let len = f.metadata().map_err(Errno::from)?.len();
        if d.valid < len {
            f.set_len(d.valid).map_err(Errno::from)?;
        }
        for (&page, bytes) in &d.pages {
            let start = page * PAGE;
            if start >= d.size {
                continue;
            }
            let n = (d.size - start).min(PAGE) as usize;
            f.write_all_at(&bytes[..n], start).map_err(Errno::from)?;
        }
        f.set_len(d.size).map_err(Errno::from)?;
        f.sync_all().map_err(Errno::from)?;
        Ok(())
    }

    /// Forgets `rel` and everything under it (removed, or replaced by a rename).
    fn forget_path(&mut self, rel: &Path) {
        let gone: Vec<PathBuf> = self
            .inodes
            .keys()
            .filter(|p| p.starts_with(rel))
            .cloned()
            .collect();
        for p in gone {
            if let Some(i) = self.inodes.remove(&p) {
                self.paths.remove(&i);
                self.files.remove(&i);
            }
        }
    }

    fn rename(&mut self, from: &Path, to: &Path) -> Result<(), Errno> {
        fs::rename(self.full(from), self.full(to)).map_err(Errno::from)?;
        self.forget_path(to);
        let moved: Vec<(PathBuf, u64)> = self
            .inodes
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (p, i) in moved {
            let new = to.join(p.strip_prefix(from).expect("prefix"));
            self.inodes.remove(&p);
            self.inodes.insert(new.clone(), i);
            self.paths.insert(i, new);
        }
        Ok(())
    }
}

struct LossyFs {
    control: Arc<Control>,
}

impl LossyFs {
    /// Runs `f` on the state, unless the power is off.
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> Result<T, Errno>) -> Result<T, Errno> {
        let mut inner = self.control.inner.lock().unwrap();
        if self.control.cut.load(Ordering::SeqCst) {
            return Err(Errno::EIO);
        }
        f(&mut inner)
    }

    fn entry(&self, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.with(|s| {
            let rel = s.child(parent, name)?;
            fs::symlink_metadata(s.full(&rel)).map_err(Errno::from)?;
            let ino = s.ino_of(&rel);
            s.attr(ino, &rel)
        }) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for LossyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.entry(parent, name, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|s| s.attr(ino.0, &s.rel(ino)?)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.with(|s| {
            let rel = s.rel(ino)?;
            if let Some(mode) = mode {
                fs::set_permissions(s.full(&rel), fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(Errno::from)?;
            }
            if let Some(size) = size {
                s.truncate(ino.0, size)?;
            }
            s.attr(ino.0, &rel)
        }) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.with(|s| {
            let rel = s.child(parent, name)?;
            fs::create_dir(s.full(&rel)).map_err(Errno::from)?;
            fs::set_permissions(s.full(&rel), fs::Permissions::from_mode(mode & 0o7777))
                .map_err(Errno::from)?;
            Ok(())
        }) {
            Ok(()) => self.entry(parent, name, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.with(|s| {
                let rel = s.child(parent, name)?;
                fs::remove_file(s.full(&rel)).map_err(Errno::from)?;
                s.forget_path(&rel);
                Ok(())
            }),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.with(|s| {
                let rel = s.child(parent, name)?;
                fs::remove_dir(s.full(&rel)).map_err(Errno::from)?;
                s.forget_path(&rel);
                Ok(())
            }),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.with(|s| {
                if !flags.is_empty() {
                    return Err(Errno::EINVAL);
                }
                let from = s.child(parent, name)?;
                let to = s.child(newparent, newname)?;
                s.rename(&from, &to)
            }),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|s| {
            let rel = s.rel(ino)?;
            fs::symlink_metadata(s.full(&rel)).map_err(Errno::from)?;
            if flags.0 & O_TRUNC != 0 {
                s.truncate(ino.0, 0)?;
            }
            Ok(())
        }) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.with(|s| {
            let rel = s.child(parent, name)?;
            let full = s.full(&rel);
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&full)
                .map_err(Errno::from)?;
            fs::set_permissions(&full, fs::Permissions::from_mode(mode & 0o7777))
                .map_err(Errno::from)?;
            let ino = s.ino_of(&rel);
            s.attr(ino, &rel)
        }) {
            Ok(a) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.with(|s| s.read(ino.0, offset, u64::from(size))) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.with(|s| s.write(ino.0, offset, data)) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        empty(reply, self.with(|_| Ok(())));
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.with(|s| s.fsync(ino.0));
        if r.is_ok() {
            self.control.fsyncs.fetch_add(1, Ordering::SeqCst);
        }
        empty(reply, r);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.with(|s| {
            let rel = s.rel(ino)?;
            let mut names: Vec<(PathBuf, FileType)> = Vec::new();
            for e in fs::read_dir(s.full(&rel)).map_err(Errno::from)? {
                let e = e.map_err(Errno::from)?;
                let kind = match e.file_type().map_err(Errno::from)?.is_dir() {
                    true => FileType::Directory,
                    false => FileType::RegularFile,
                };
                names.push((PathBuf::from(e.file_name()), kind));
            }
            names.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = vec![
                (ino.0, FileType::Directory, PathBuf::from(".")),
                (ino.0, FileType::Directory, PathBuf::from("..")),
            ];
            for (name, kind) in names {
                let i = s.ino_of(&rel.join(&name));
                out.push((i, kind, name));
            }
            Ok(out)
        }) {
            Ok(entries) => {
                for (n, (i, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(i), n as u64 + 1, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory operations are durable at once in this model.
        empty(reply, self.with(|_| Ok(())));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Plenty of room: the model is about durability, not a full disk.
        reply.statfs(
            1 << 24,
            1 << 23,
            1 << 23,
            1 << 20,
            1 << 19,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }
}

/// `O_TRUNC` on Linux.
const O_TRUNC: i32 = 0o1000;
