//! Where master keys come from: configuration (`vault.master_keys`), a
//! mounted folder (`vault.master_keys_dir`), or — for the embedded default
//! on SQLite only — a development key generated into the data folder.

use std::path::{Path, PathBuf};

use crate::config::VaultConfig;
use zeroize::Zeroizing;

use crate::keys::{KeyError, Keyring, MasterKey};

/// The file of the development key, in the SQLite database's folder.
pub const DEV_KEY_FILE: &str = "vault-dev-master-key";

/// Why the keyring cannot be loaded; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// A key is malformed.
    #[error("vault master key: {0}")]
    Key(#[from] KeyError),
    /// Version given twice.
    #[error(
        "vault master key version {0} is given both in vault.master_keys and in vault.master_keys_dir"
    )]
    Duplicate(u32),
    /// The folder cannot be read.
    #[error("cannot read vault.master_keys_dir {path}: {source}")]
    Dir {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No key on a production database.
    #[error(
        "no vault master key is configured: set secrets_vault.master_keys (e.g. TWIG__SECRETS_VAULT__MASTER_KEYS__1=$(openssl rand -base64 32)) or secrets_vault.master_keys_dir; a development key is generated only for the embedded SQLite default"
    )]
    Missing,
}

/// The keyring of `config` for a server whose database is `database_url`.
pub fn load(config: &VaultConfig, database_url: &str) -> Result<Keyring, KeyringError> {
    let mut keys: Vec<MasterKey> = Vec::new();
    for (name, secret) in &config.master_keys {
        let version = Keyring::parse_version(name)?;
        keys.push(MasterKey::from_base64(version, secret.expose())?);
    }
    if let Some(dir) = &config.master_keys_dir {
        let io = |path: &Path, source| KeyringError::Dir {
            path: path.to_path_buf(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let path = entry.map_err(|e| io(dir, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            // Kubernetes puts its own ..data links beside the keys.
            if name.starts_with('.') || path.is_dir() {
                continue;
            }
            let version = Keyring::parse_version(name)?;
            if keys.iter().any(|k| k.version() == version) {
                return Err(KeyringError::Duplicate(version));
            }
            let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| io(&path, e))?);
            keys.push(MasterKey::from_base64(version, &text)?);
        }
    }
    if keys.is_empty() {
        let folder = sqlite_folder(database_url).ok_or(KeyringError::Missing)?;
        keys.push(dev_key(&folder)?);
    }
    Ok(Keyring::new(keys)?)
}

/// The folder of a file-backed SQLite database URL.
fn sqlite_folder(url: &str) -> Option<PathBuf> {
    let path = url.strip_prefix("sqlite://")?;
    let path = path.split('?').next()?;
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    Some(
        Path::new(path)
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    )
}

/// Reads the development key from `folder`, generating it on first start.
fn dev_key(folder: &Path) -> Result<MasterKey, KeyringError> {
    let path = folder.join(DEV_KEY_FILE);
    let io = |source| KeyringError::Dir {
        path: path.clone(),
        source,
    };
    let key = if path.exists() {
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(io)?);
        MasterKey::from_base64(1, &text)?
    } else {
        std::fs::create_dir_all(folder).map_err(io)?;
        let key = MasterKey::generate(1);
        write_private(&path, key.to_base64().as_bytes()).map_err(io)?;
        key
    };
    tracing::warn!(
        path = %path.display(),
        "THE VAULT USES A DEVELOPMENT MASTER KEY stored beside the database: anyone who \
         can read that folder can decrypt every secret. Configure vault.master_keys for \
         anything but local development."
    );
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use twig_config::Secret;

    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn keys_from_configuration_and_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("2"), b64(&[2; 32])).unwrap();
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        let mut config = VaultConfig::default();
        config
            .master_keys
            .insert("1".into(), Secret::new(b64(&[1; 32])));
        config.master_keys_dir = Some(dir.path().to_path_buf());
        let ring = load(&config, "postgres://db/twig").unwrap();
        assert_eq!(ring.active().version(), 2);
        assert!(ring.get(1).is_some());

        std::fs::write(dir.path().join("1"), b64(&[3; 32])).unwrap();
        assert!(matches!(
            load(&config, "postgres://db/twig"),
            Err(KeyringError::Duplicate(1))
        ));
    }

    #[test]
    fn bad_keys_stop_the_start_with_a_clear_message() {
        let mut config = VaultConfig::default();
        config
            .master_keys
            .insert("1".into(), Secret::new(b64(&[1; 31])));
        let err = load(&config, "postgres://db/twig").unwrap_err().to_string();
        assert!(err.contains("31 bytes; it must be 32"), "{err}");
        config.master_keys.insert("1".into(), Secret::new("%%%"));
        let err = load(&config, "postgres://db/twig").unwrap_err().to_string();
        assert!(err.contains("not base64"), "{err}");
        config.master_keys.clear();
        config
            .master_keys
            .insert("first".into(), Secret::new(b64(&[1; 32])));
        assert!(load(&config, "postgres://db/twig").is_err());
    }

    #[test]
    fn a_development_key_only_beside_sqlite() {
        let config = VaultConfig::default();
        let err = load(&config, "postgres://db/twig").unwrap_err();
        assert!(matches!(err, KeyringError::Missing), "{err}");
        assert!(load(&config, "sqlite::memory:").is_err());
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/twig.db?mode=rwc", dir.path().display());
        let first = load(&config, &url).unwrap();
        let again = load(&config, &url).unwrap();
        assert_eq!(first.active().check_value(), again.active().check_value());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(DEV_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
