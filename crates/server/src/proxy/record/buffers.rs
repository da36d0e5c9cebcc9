//! The reads the recording keeps until the writer has written them, in buffers that go back
//! to a small pool once written instead of back to the allocator.
//!
//! A stream direction with a recording and no faults reads straight into a pooled buffer
//! ([`Buffers::buffer`]) and lends it whole to the recording ([`Buffers::lend`]), forwarding
//! from the same memory: no copy on the serving thread. Other reads are copied
//! ([`Buffers::copy`]). Either way a recorded 64 KiB read was a 64 KiB allocation on the
//! serving thread freed on the writer thread; left to the allocator, a busy stream's buffers
//! went back to the kernel and came again as fresh pages, faulted in and zeroed, on every
//! read (8 recorded streams: 10 % more throughput without that, measured by keeping glibc
//! from trimming; the copy was another quarter of the serving thread). The pool keeps at
//! most [`KEPT`] buffers: 4 MiB, whatever the traffic was.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Reads shorter than this are copied as they are: small allocations are cheap, and a pooled
/// buffer holding a 64-byte message would waste its room.
const POOLED_FROM: usize = 4 * 1024;

/// Buffers kept for reuse, at most (of at most [`LARGEST`] bytes each).
const KEPT: usize = 64;

/// A buffer larger than this (a long seqpacket message) is not kept.
const LARGEST: usize = 64 * 1024;

/// The pool, shared by the serving threads (taking) and the writer (returning).
#[derive(Debug, Clone, Default)]
pub(super) struct Buffers {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Buffers {
    /// A copy of `bytes`, in a pooled buffer when it is large.
    pub(super) fn copy(&self, bytes: &[u8]) -> Bytes {
        if bytes.len() < POOLED_FROM {
            return Bytes::copy_from_slice(bytes);
        }
        let mut buf = self.take();
        buf.clear();
        buf.extend_from_slice(bytes);
        Bytes::from_owner(Pooled {
            buf,
            free: self.free.clone(),
        })
    }

    /// A buffer of `len` bytes to read into, to [`lend`](Buffers::lend) once read (a reused
    /// one is not zeroed again).
    pub(super) fn buffer(&self, len: usize) -> Vec<u8> {
        let mut buf = self.take();
        buf.resize(len, 0);
        buf
    }

    /// A kept buffer, or a new empty one.
    fn take(&self) -> Vec<u8> {
        let kept = self.free.lock().ok().and_then(|mut free| free.pop());
        kept.unwrap_or_default()
    }

    /// The first `len` bytes of `buf`, shared: the recording keeps them until written, then
    /// the buffer goes back to the pool, and `buf` is left empty. A short read is copied
    /// instead, and `buf` kept for the next.
    pub(super) fn lend(&self, buf: &mut Vec<u8>, len: usize) -> Bytes {
        if len < POOLED_FROM {
            return Bytes::copy_from_slice(&buf[..len]);
        }
        let mut buf = std::mem::take(buf);
        buf.truncate(len);
        Bytes::from_owner(Pooled {
            buf,
            free: self.free.clone(),
        })
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.free.lock().map(|free| free.len()).unwrap_or(0)
    }
}

/// A buffer on loan: back to the pool when the last `Bytes` of it is dropped.
struct Pooled {
    buf: Vec<u8>,
    free: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if self.buf.capacity() > LARGEST {
            return;
        }
        if let Ok(mut free) = self.free.lock()
            && free.len() < KEPT
        {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_copy_gives_its_buffer_back_and_the_next_copy_reuses_it() {
        let buffers = Buffers::default();
        let first = buffers.copy(&[1u8; 64 * 1024]);
        assert_eq!(&first[..], &[1u8; 64 * 1024][..]);
        let at = first.as_ptr();
        assert_eq!(buffers.kept(), 0);
        drop(first);
        assert_eq!(buffers.kept(), 1);
        let second = buffers.copy(&[2u8; 5000]);
        assert_eq!(second.as_ptr(), at, "the same buffer");
        assert_eq!(&second[..], &[2u8; 5000][..]);
    }

    #[test]
    fn a_lent_buffer_is_shared_as_read_and_read_into_again_once_written() {
        let buffers = Buffers::default();
        let mut buf = buffers.buffer(64 * 1024);
        assert_eq!(buf.len(), 64 * 1024);
        buf[..5].copy_from_slice(b"hello");
        let at = buf.as_ptr();
        let lent = buffers.lend(&mut buf, 5000);
        assert!(buf.is_empty(), "taken");
        assert_eq!(&lent[..5], b"hello");
        assert_eq!(lent.len(), 5000);
        assert_eq!(lent.as_ptr(), at, "not copied");
        drop(lent);
        let mut again = buffers.buffer(64 * 1024);
        assert_eq!(again.as_ptr(), at, "the same buffer");
        assert_eq!(again.len(), 64 * 1024);
        // A short read is copied: the buffer stays for the next read.
        let short = buffers.lend(&mut again, 5);
        assert_eq!(&short[..], b"hello");
        assert_eq!(again.as_ptr(), at);
        assert_eq!(buffers.kept(), 0);
    }

    #[test]
    fn small_reads_and_large_buffers_are_not_kept_and_the_pool_is_bounded() {
        let buffers = Buffers::default();
        drop(buffers.copy(b"ping"));
        assert_eq!(buffers.kept(), 0);
        drop(buffers.copy(&vec![0u8; LARGEST + 1]));
        assert_eq!(buffers.kept(), 0);
        let many: Vec<Bytes> = (0..KEPT + 10).map(|_| buffers.copy(&[7u8; 8192])).collect();
        drop(many);
        assert_eq!(buffers.kept(), KEPT);
    }
}
