//! Argon2id password hashes (PHC strings), computed in memory the server
//! keeps. The default parameters fill 19 MiB per hash; allocated afresh for
//! every login, that memory stayed in the allocator's heaps (about 1 GB of
//! RSS after 2,000 logins, BENCHMARKS.md). Reusing one buffer per hash in
//! flight bounds it to `limits.password_hashes_concurrent_max` × 19 MiB.

use std::sync::Mutex;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};

#[derive(Default)]
pub struct PasswordHasher {
    /// Buffers not in use; at most one per hash that ran at once.
    spare: Mutex<Vec<Vec<Block>>>,
}

impl PasswordHasher {
    /// The PHC string of `password` with a fresh random salt and the
    /// default parameters.
    pub fn hash(&self, password: &[u8]) -> Result<String, String> {
        let salt = Salt::generate();
        let params = Params::default();
        let argon2 = Argon2::new(Algorithm::default(), Version::default(), params.clone());
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        self.with_memory(&params, |memory| {
            argon2.hash_password_into_with_memory(password, &salt, &mut out, memory)
        })
        .map_err(|err| err.to_string())?;
        let hash = PasswordHash {
            algorithm: Algorithm::default().ident(),
            version: Some(Version::default().into()),
            params: ParamsString::try_from(&params).map_err(|err| err.to_string())?,
            salt: Some(salt),
            hash: Some(Output::new(&out).map_err(|err| err.to_string())?),
        };
        Ok(hash.to_string())
    }

    /// Whether `password` matches `stored`, a PHC string from [`Self::hash`]
    /// (or any Argon2 PHC string); a malformed one matches nothing.
    pub fn verify(&self, password: &[u8], stored: &str) -> bool {
        let Ok(hash) = PasswordHash::new(stored) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
            return false;
        };
        let Ok(version) = hash
            .version
            .map_or(Ok(Version::default()), Version::try_from)
        else {
            return false;
        };
        let Ok(params) = Params::try_from(&hash) else {
            return false;
        };
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let mut out = vec![0u8; expected.len()];
        let computed = self.with_memory(&params, |memory| {
            argon2.hash_password_into_with_memory(password, salt, &mut out, memory)
        });
        // `Output`'s equality is constant-time.
        computed.is_ok() && Output::new(&out).is_ok_and(|output| output == *expected)
    }

    fn with_memory<T>(&self, params: &Params, hash: impl FnOnce(&mut [Block]) -> T) -> T {
        let blocks = params.block_count();
        let reused = crate::poison::lock(&self.spare)
            .pop()
            .filter(|memory| memory.len() == blocks);
        let mut memory = reused.unwrap_or_else(|| vec![Block::default(); blocks]);
        let result = hash(&mut memory);
        crate::poison::lock(&self.spare).push(memory);
        result
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

    use super::*;

    #[test]
    fn hashes_verify_both_ways_with_the_argon2_crate() {
        // Goal: hashes made here are standard Argon2id PHC strings, and
        // hashes stored before (by the argon2 crate's own API) still verify.
        let hasher = PasswordHasher::default();
        let ours = hasher.hash(b"correct horse").expect("hash");
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let parsed = PasswordHash::new(&ours).expect("PHC string");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        let theirs = Argon2::default()
            .hash_password(b"battery staple")
            .expect("hash")
            .to_string();
        assert!(hasher.verify(b"battery staple", &theirs));
        assert!(!hasher.verify(b"battery stapler", &theirs));
        assert!(!hasher.verify(b"correct horse", &theirs));
        assert!(!hasher.verify(b"correct horse", "not a hash"));
        assert_ne!(ours, hasher.hash(b"correct horse").expect("hash"), "salted");
        assert_eq!(
            crate::poison::lock(&hasher.spare).len(),
            1,
            "one buffer reused throughout"
        );
    }
}
