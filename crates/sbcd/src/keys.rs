//! The proxy's secrets on disk and from the OS: the route key (signs what the box writes into
//! its Record-Route entries, SPEC §7) lives in `<state dir>/route.key`, mode 0600, made once
//! from the OS's random source and kept on the data partition so a restarted engine still
//! verifies the routes of calls it set up before; the seed of branch ids and tags is new at
//! every start.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The key file's name in the state directory.
pub const ROUTE_KEY_FILE: &str = "route.key";

/// Why the keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read random bytes from the OS: {0}")]
    Random(getrandom::Error),
    #[error("route key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("route key {path} must be 32 bytes with mode 0600 (it is {len} bytes, mode {mode:o})")]
    Bad { path: PathBuf, len: u64, mode: u32 },
}

fn random() -> Result<[u8; 32], KeyError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(KeyError::Random)?;
    Ok(bytes)
}

/// The route key from `dir` (made when absent) and a fresh seed.
pub fn load_or_create(dir: &Path) -> Result<proxy::Keys, KeyError> {
    let path = dir.join(ROUTE_KEY_FILE);
    let io = |source| KeyError::Io {
        path: path.clone(),
        source,
    };
    let route = match std::fs::metadata(&path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if meta.len() != 32 || mode & 0o077 != 0 {
                return Err(KeyError::Bad {
                    path,
                    len: meta.len(),
                    mode,
                });
            }
            let bytes = std::fs::read(&path).map_err(io)?;
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes);
            key
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random()?;
            // Written whole under a temporary name, then renamed: a power cut leaves either no
            // key (a new one is made) or the whole key.
            let temp = dir.join(format!("{ROUTE_KEY_FILE}.tmp"));
            let _ = std::fs::remove_file(&temp);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)
                .map_err(io)?;
            file.write_all(&key).map_err(io)?;
            file.sync_all().map_err(io)?;
            std::fs::rename(&temp, &path).map_err(io)?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            key
        }
        Err(e) => return Err(io(e)),
    };
    Ok(proxy::Keys {
        route,
        seed: random()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_kept_and_a_loose_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.route, b.route, "the route key survives a restart");
        assert_ne!(a.seed, b.seed, "the seed is new at every start");
        let path = dir.path().join(ROUTE_KEY_FILE);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("0600"), "{e}");
    }
}
