//! argon2id password hashing, off the async threads, bounded in parallelism and in memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::{Ident, Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq as _;
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
/// Each hash needs `memory_kib` of scratch memory and tens of milliseconds of one core.
/// Hashing runs on the blocking pool behind a semaphore of `max_parallel` permits, and
/// each permit reuses one scratch buffer from a pool: a burst of logins queues instead of
/// allocating gigabytes, and resident memory stays at `max_parallel × memory_kib`
/// (allocating 19 MiB per hash let glibc's arenas grow to ~780 MB under
/// `adiuva bench`'s login load).
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    buffers: Arc<Mutex<Vec<Vec<Block>>>>,
    /// A hash of a random password, verified against when the email is unknown so that
    /// "no such user" costs the same time as "wrong password".
    dummy_hash: Arc<String>,
    /// Verifications performed, whether or not the user existed (observability, and the
    /// proof in tests that an unknown email costs a verification too).
    verifications: Arc<AtomicU64>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

fn argon_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("argon2: {e}"))
}

fn argon2id(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The raw argon2id output of `password` with `salt`, computed in `scratch` (grown if
/// the parameters need more blocks than it has).
fn raw_hash(
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    scratch: &mut Vec<Block>,
) -> Result<(), Error> {
    let blocks = params.block_count();
    if scratch.len() < blocks {
        scratch.resize(blocks, Block::new());
    }
    argon2id(params.clone())
        .hash_password_into_with_memory(password, salt, out, &mut scratch[..blocks])
        .map_err(argon_err)
}

fn hash_phc(params: &Params, password: &[u8], scratch: &mut Vec<Block>) -> Result<String, Error> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| Error::internal(format!("no randomness: {e}")))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    raw_hash(params, password, &salt, &mut out, scratch)?;
    let phc = PasswordHash {
        algorithm: Ident::new("argon2id").map_err(argon_err)?,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(argon_err)?,
        salt: Some(Salt::new(&salt).map_err(argon_err)?),
        hash: Some(Output::new(&out).map_err(argon_err)?),
    };
    Ok(phc.to_string())
}

fn verify_phc(password: &[u8], phc: &str, scratch: &mut Vec<Block>) -> Result<bool, Error> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::internal(format!("stored password hash is invalid: {e}"))
    };
    let parsed = PasswordHash::new(phc).map_err(|e| bad(&e))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(bad(&format!(
            "algorithm {} is not argon2id",
            parsed.algorithm
        )));
    }
    let params = Params::try_from(&parsed).map_err(|e| bad(&e))?;
    let (Some(salt), Some(expected)) = (parsed.salt.as_ref(), parsed.hash.as_ref()) else {
        return Err(bad(&"salt or hash missing"));
    };
    let mut out = vec![0u8; expected.len()];
    raw_hash(&params, password, salt.as_ref(), &mut out, scratch)?;
    Ok(bool::from(out.as_slice().ct_eq(expected.as_bytes())))
}

impl PasswordHasher {
    /// A hasher with `cost`, allowing `max_parallel` hashes at once.
    pub fn new(cost: HashCost, max_parallel: usize) -> Result<Self, Error> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| Error::internal(format!("bad argon2 parameters: {e}")))?;
        let mut random = [0u8; 24];
        getrandom::fill(&mut random).map_err(|e| Error::internal(format!("no randomness: {e}")))?;
        let mut scratch = Vec::new();
        let dummy = hash_phc(&params, hex::encode(random).as_bytes(), &mut scratch)?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(max_parallel.max(1))),
            buffers: Arc::new(Mutex::new(vec![scratch])),
            dummy_hash: Arc::new(dummy),
            verifications: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: &Password) -> Result<String, Error> {
        let params = self.params.clone();
        let pw = password.clone();
        self.run(move |scratch| hash_phc(&params, pw.expose().as_bytes(), scratch))
            .await
    }

    /// Whether `password` matches `phc`; with `None`, verifies against the dummy hash and
    /// answers `false`, taking the same time.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, Error> {
        let known = phc.is_some();
        let phc = phc.map_or_else(|| self.dummy_hash.as_str().to_owned(), str::to_owned);
        let pw = password.to_owned();
        let counter = self.verifications.clone();
        let ok = self
            .run(move |scratch| {
                counter.fetch_add(1, Ordering::Relaxed);
                verify_phc(pw.as_bytes(), &phc, scratch)
            })
            .await?;
        Ok(ok && known)
    }

    /// How many password verifications have run (real or against the dummy hash).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Runs `f` on the blocking pool with a pooled scratch buffer, at most `max_parallel`
    /// at a time.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Block>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Error::internal(format!("hasher closed: {e}")))?;
        // Holding a permit means a buffer is free or may be made: never more buffers than permits.
        let mut scratch = self
            .buffers
            .lock()
            .map_err(|_| Error::internal("hasher buffer pool poisoned"))?
            .pop()
            .unwrap_or_default();
        let (result, scratch) = tokio::task::spawn_blocking(move || {
            let r = f(&mut scratch);
            (r, scratch)
        })
        .await
        .map_err(|e| Error::internal(format!("hashing task failed: {e}")))?;
        if let Ok(mut pool) = self.buffers.lock() {
            pool.push(scratch);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(
            HashCost {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            2,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_are_salted() {
        let h = cheap();
        let pw = Password::parse("correct horse battery").unwrap();
        let a = h.hash(&pw).await.unwrap();
        let b = h.hash(&pw).await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "fresh salt each time");
        assert!(h.verify("correct horse battery", Some(&a)).await.unwrap());
        assert!(!h.verify("correct horse batterY", Some(&a)).await.unwrap());
        assert!(
            !h.verify("correct horse battery", None).await.unwrap(),
            "dummy never matches"
        );
        assert_eq!(h.verifications(), 3);
    }

    #[tokio::test]
    async fn verifies_hashes_made_by_the_reference_implementation_and_other_costs() {
        use argon2::password_hash::PasswordHasher as _;
        let reference = argon2id(Params::new(128, 2, 1, None).unwrap())
            .hash_password(b"hunter2-hunter2")
            .unwrap()
            .to_string();
        let h = cheap();
        assert!(h.verify("hunter2-hunter2", Some(&reference)).await.unwrap());
        assert!(!h.verify("hunter3-hunter3", Some(&reference)).await.unwrap());
        // And the reference implementation accepts ours.
        use argon2::password_hash::PasswordVerifier as _;
        let ours = h
            .hash(&Password::parse("hunter2-hunter2").unwrap())
            .await
            .unwrap();
        assert!(
            argon2id(Params::default())
                .verify_password(b"hunter2-hunter2", ours.as_str())
                .is_ok()
        );
    }

    #[tokio::test]
    async fn corrupt_hashes_are_errors_not_matches() {
        let h = cheap();
        assert!(
            h.verify("whatever-whatever", Some("not a phc string"))
                .await
                .is_err()
        );
        assert!(
            h.verify(
                "whatever-whatever",
                Some("$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g")
            )
            .await
            .is_err()
        );
    }
}
