//! Keys stored inline when short. Most keys are short (`user:1000:sessions` is 18 bytes);
//! keeping them inside the table's bucket saves an allocation per key and, on every
//! lookup, the cache miss of following a pointer to compare the key.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Longest key stored inline (the enum is 24 bytes, like a `Vec`).
pub const INLINE_KEY: usize = 22;

#[derive(Clone)]
pub enum CompactKey {
    Inline { len: u8, buf: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl CompactKey {
    pub fn new(bytes: &[u8]) -> CompactKey {
        if bytes.len() <= INLINE_KEY {
            let mut buf = [0u8; INLINE_KEY];
            buf[..bytes.len()].copy_from_slice(bytes);
            CompactKey::Inline {
                len: bytes.len() as u8,
                buf,
            }
        } else {
            CompactKey::Heap(bytes.into())
        }
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            CompactKey::Inline { len, buf } => &buf[..*len as usize],
            CompactKey::Heap(b) => b,
        }
    }

    /// As [`CompactKey::new`], keeping a long value's own allocation.
    pub fn from_vec(bytes: Vec<u8>) -> CompactKey {
        if bytes.len() <= INLINE_KEY {
            CompactKey::new(&bytes)
        } else {
            CompactKey::Heap(bytes.into_boxed_slice())
        }
    }

    /// The bytes as a `Vec`, a long value's allocation handed over.
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            CompactKey::Inline { len, buf } => buf[..len as usize].to_vec(),
            CompactKey::Heap(b) => b.into_vec(),
        }
    }

    /// Heap bytes held beyond the key itself.
    pub fn heap_size(&self) -> usize {
        match self {
            CompactKey::Inline { .. } => 0,
            CompactKey::Heap(b) => b.len(),
        }
    }
}

impl Deref for CompactKey {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Borrow<[u8]> for CompactKey {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Hashes exactly as `[u8]` does, which `Borrow<[u8]>` lookups require.
impl Hash for CompactKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl PartialEq for CompactKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for CompactKey {}

impl std::fmt::Debug for CompactKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl From<Vec<u8>> for CompactKey {
    fn from(bytes: Vec<u8>) -> CompactKey {
        CompactKey::from_vec(bytes)
    }
}

impl From<&[u8]> for CompactKey {
    fn from(b: &[u8]) -> Self {
        CompactKey::new(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::hash_map::DefaultHasher;

    fn h<T: Hash + ?Sized>(v: &T) -> u64 {
        let mut s = DefaultHasher::new();
        v.hash(&mut s);
        s.finish()
    }

    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<CompactKey>(), 24);
    }

    proptest! {
        #[test]
        fn same_bytes_same_hash(b in proptest::collection::vec(any::<u8>(), 0..60)) {
            let k = CompactKey::new(&b);
            prop_assert_eq!(k.as_bytes(), &b[..]);
            prop_assert_eq!(h(&k), h(&b[..]));
        }
    }
}
