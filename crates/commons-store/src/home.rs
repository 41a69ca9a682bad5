//! A node's home: the directory that holds its keys and its store.
//!
//! The home is `--home DIR`, else `$COMMONS_HOME`, else `commons/` under the user's data
//! directory. Keys are 32-byte ed25519 seeds written as hex in files readable by the owner only
//! (mode 0600); a key file that others can read is refused, with the command that fixes it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use commons_core::SecretKey;

/// The environment variable that selects a home.
pub const HOME_ENV: &str = "COMMONS_HOME";
const AUTHOR_KEY_FILE: &str = "author.key";
const NODE_KEY_FILE: &str = "node.key";
const NAME_FILE: &str = "name";

/// Why a home or its keys could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// No home given and no data directory known.
    #[error("no home directory: set {HOME_ENV} or pass --home DIR")]
    NoHome,
    /// `id init` on a home that has keys.
    #[error(
        "keys already exist in {path}; refusing to overwrite them (use another --home to make a new identity)"
    )]
    KeysExist {
        /// The existing key file.
        path: PathBuf,
    },
    /// The keys are not there.
    #[error("no identity in {home}: run `commons id init` first (or `commons --home DIR id init`)")]
    NoKeys {
        /// The home.
        home: PathBuf,
    },
    /// The key file can be read by others.
    #[error(
        "key file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}` and try again"
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// The key file does not hold a key.
    #[error("key file {path} is damaged: expected 64 hex digits")]
    BadKeyFile {
        /// The key file.
        path: PathBuf,
    },
    /// The name is not usable.
    #[error("invalid name: {0}")]
    BadName(&'static str),
    /// An I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HomeError + '_ {
    move |source| HomeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A person's identity on this node: author key (who signs), node key (the device).
#[derive(Debug, Clone)]
pub struct Identity {
    /// Display name, if one was given.
    pub name: Option<String>,
    /// Signs records.
    pub author: SecretKey,
    /// The libp2p identity of the daemon.
    pub node: SecretKey,
}

/// A home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `explicit`, else `$COMMONS_HOME`, else the user's data directory.
    pub fn resolve(explicit: Option<&Path>) -> Result<Home, HomeError> {
        let root = match explicit {
            Some(p) => p.to_owned(),
            None => match std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => dirs::data_dir().ok_or(HomeError::NoHome)?.join("commons"),
            },
        };
        Ok(Home { root })
    }

    /// A home at exactly `root`.
    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// The home directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the store lives.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    /// Whether keys exist.
    pub fn has_identity(&self) -> bool {
        self.root.join(AUTHOR_KEY_FILE).exists()
    }

    fn create_root(&self) -> Result<(), HomeError> {
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .map_err(io_err(&self.root))
    }

    /// Creates fresh author and node keys. Refuses if keys exist.
    pub fn init_identity(&self, name: Option<&str>) -> Result<Identity, HomeError> {
        if let Some(n) = name
            && (n.trim().is_empty() || n.len() > 100 || n.chars().any(char::is_control))
        {
            return Err(HomeError::BadName(
                "a name is 1 to 100 characters without control characters",
            ));
        }
        let author_path = self.root.join(AUTHOR_KEY_FILE);
        if author_path.exists() {
            return Err(HomeError::KeysExist { path: author_path });
        }
        // A node key without an author key is what an init interrupted by a crash leaves (the
        // author key is written last): it was never used, and is made again.
        self.create_root()?;
        let author = SecretKey::from_seed(random_seed()?);
        let node = SecretKey::from_seed(random_seed()?);
        write_key(&self.root.join(NODE_KEY_FILE), &node)?;
        if let Some(n) = name {
            let path = self.root.join(NAME_FILE);
            fs::write(&path, n).map_err(io_err(&path))?;
        }
        // The author key is written last: its presence marks a complete identity.
        write_key(&self.root.join(AUTHOR_KEY_FILE), &author)?;
        Ok(Identity {
            name: name.map(str::to_owned),
            author,
            node,
        })
    }

    /// Loads the keys, refusing key files that others can read.
    pub fn load_identity(&self) -> Result<Identity, HomeError> {
        let author_path = self.root.join(AUTHOR_KEY_FILE);
        if !author_path.exists() {
            return Err(HomeError::NoKeys {
                home: self.root.clone(),
            });
        }
        let author = read_key(&author_path)?;
        let node = read_key(&self.root.join(NODE_KEY_FILE))?;
        let name_path = self.root.join(NAME_FILE);
        let name = match fs::read_to_string(&name_path) {
            Ok(n) => Some(n.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&name_path)(e)),
        };
        Ok(Identity { name, author, node })
    }

    /// Makes the home owner-only (0700) again, whatever was done to it since it was created: the
    /// daemon does it at every start, so its control socket and keys are never reachable by
    /// others through the directory.
    pub fn restrict(&self) -> Result<(), HomeError> {
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .map_err(io_err(&self.root))
    }

    /// Loads the keys, creating them first if the home has none (what the daemon does).
    pub fn ensure_identity(&self) -> Result<Identity, HomeError> {
        if self.has_identity() {
            self.load_identity()
        } else {
            self.init_identity(None)
        }
    }
}

fn random_seed() -> Result<[u8; 32], HomeError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| HomeError::Io {
        path: PathBuf::from("<system random source>"),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(seed)
}

/// Writes a key file atomically: a temporary file (0600) in the same directory, written and
/// synced, then renamed over `path`, then the directory synced. A crash leaves the old file or
/// the new one, never a partial key.
fn write_key(path: &Path, key: &SecretKey) -> Result<(), HomeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("key.tmp");
    // A leftover of an interrupted write goes: the new file must be created 0600.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&tmp)(e)),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(format!("{}\n", hex::encode(key.seed())).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err(path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn read_key(path: &Path) -> Result<SecretKey, HomeError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(HomeError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| HomeError::BadKeyFile {
        path: path.to_owned(),
    })?;
    Ok(SecretKey::from_seed(seed))
}

/// Size in bytes of the files under `path`, walked recursively; what cannot be read counts as
/// nothing. Shown by `node status` as the store's size.
pub fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_load_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h"));
        let id = home.init_identity(Some("alice")).unwrap();
        let loaded = home.load_identity().unwrap();
        assert_eq!(loaded.author.public(), id.author.public());
        assert_eq!(loaded.node.public(), id.node.public());
        assert_ne!(id.author.public(), id.node.public());
        assert_eq!(loaded.name.as_deref(), Some("alice"));
        let mode = fs::metadata(dir.path().join("h/author.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            home.init_identity(None),
            Err(HomeError::KeysExist { .. })
        ));
    }

    #[test]
    fn an_init_interrupted_before_the_author_key_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h"));
        fs::create_dir_all(home.root()).unwrap();
        // What a crash between the two key files (or in the middle of the first) leaves.
        fs::write(home.root().join(NODE_KEY_FILE), "0123").unwrap();
        fs::write(home.root().join("node.key.tmp"), "01").unwrap();
        assert!(!home.has_identity());
        let id = home.ensure_identity().expect("made again");
        let loaded = home.load_identity().expect("complete");
        assert_eq!(loaded.node.public(), id.node.public());
        assert!(!home.root().join("node.key.tmp").exists());
    }

    #[test]
    fn readable_key_file_is_refused_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.init_identity(None).unwrap();
        let path = dir.path().join("author.key");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = home.load_identity().unwrap_err();
        assert!(matches!(err, HomeError::Permissions { .. }));
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn missing_keys_say_what_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let err = Home::at(dir.path()).load_identity().unwrap_err();
        assert!(err.to_string().contains("commons id init"), "{err}");
    }
}
