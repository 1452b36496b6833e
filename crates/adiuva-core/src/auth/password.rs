//! argon2id password hashing, off the async threads and bounded in parallelism.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::domain::Password;
use crate::error::Error;

/// Cost parameters for argon2id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for HashCost {
    /// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Hashes and verifies passwords.
///
/// Each hash costs ~19 MiB and tens of milliseconds of one core, so hashing runs on the
/// blocking pool behind a semaphore: a burst of logins queues instead of allocating
/// gigabytes at once.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the email is unknown so that
    /// "no such user" costs the same time as "wrong password".
    dummy_hash: Arc<String>,
    /// Verifications performed, whether or not the user existed (observability, and the
    /// proof in tests that an unknown email costs a verification too).
    verifications: Arc<AtomicU64>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher with `cost`, allowing `max_parallel` hashes at once.
    pub fn new(cost: HashCost, max_parallel: usize) -> Result<Self, Error> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| Error::internal(format!("bad argon2 parameters: {e}")))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut random = [0u8; 24];
        getrandom::fill(&mut random).map_err(|e| Error::internal(format!("no randomness: {e}")))?;
        let dummy = argon2
            .hash_password(hex::encode(random).as_bytes())
            .map_err(|e| Error::internal(format!("argon2: {e}")))?
            .to_string();
        Ok(Self {
            argon2,
            permits: Arc::new(Semaphore::new(max_parallel.max(1))),
            dummy_hash: Arc::new(dummy),
            verifications: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: &Password) -> Result<String, Error> {
        let argon2 = self.argon2.clone();
        let pw = password.clone();
        self.run(move || {
            argon2
                .hash_password(pw.expose().as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| Error::internal(format!("argon2: {e}")))
        })
        .await
    }

    /// Whether `password` matches `phc`; with `None`, verifies against the dummy hash and
    /// answers `false`, taking the same time.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, Error> {
        let argon2 = self.argon2.clone();
        let known = phc.is_some();
        let phc = phc.map_or_else(|| self.dummy_hash.as_str().to_owned(), str::to_owned);
        let pw = password.to_owned();
        let counter = self.verifications.clone();
        let ok = self
            .run(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                let parsed = PasswordHash::new(&phc).map_err(|e| {
                    Error::internal(format!("stored password hash is invalid: {e}"))
                })?;
                Ok(argon2.verify_password(pw.as_bytes(), &parsed).is_ok())
            })
            .await?;
        Ok(ok && known)
    }

    /// How many password verifications have run (real or against the dummy hash).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Error::internal(format!("hasher closed: {e}")))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::internal(format!("hashing task failed: {e}")))?
    }
}
