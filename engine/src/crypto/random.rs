//! A per-thread CSPRNG: BLAKE3 in keyed mode over a counter (an XOF
//! stream), its key drawn from the OS once per thread, and again in a forked
//! child. One syscall per thread instead of one per data key and nonce,
//! which matters at hundreds of thousands of encrypted events a second.
//!
//! Fork safety: a child must never replay its parent's stream (two events
//! sealed under the same data key and nonce would leak both). The kernel
//! zeroes a `MADV_WIPEONFORK` page in the child, so a process-wide epoch
//! kept there reads 0 after any fork, however it was made; each generator
//! remembers the epoch it was seeded in and reseeds when it differs. That
//! costs a load per call, where asking `getpid` cost a syscall per call
//! (4-5% of encrypted ingest). Without the page (kernels before 4.14),
//! the process id is compared instead.

use super::CryptoError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

const BUFFER_LEN: usize = 512;

struct Generator {
    seed: zeroize::Zeroizing<[u8; 32]>,
    counter: u64,
    /// The fork epoch (or process id) this generator was seeded in.
    epoch: u64,
    /// Output not handed out yet; handed-out bytes are zeroed.
    buffer: zeroize::Zeroizing<[u8; BUFFER_LEN]>,
    used: usize,
}

thread_local! {
    static GENERATOR: std::cell::RefCell<Option<Generator>> = const { std::cell::RefCell::new(None) };
}

/// The process-wide fork epoch, on a page a forked child sees zeroed.
/// `None` when the kernel cannot wipe pages on fork.
static FORK_EPOCH_PAGE: OnceLock<Option<usize>> = OnceLock::new();

fn fork_epoch_cell() -> Option<&'static AtomicU64> {
    let address = (*FORK_EPOCH_PAGE.get_or_init(map_wipe_on_fork_page))?;
    // SAFETY: `address` is the start of a page-aligned, read-write mapping
    // that is never unmapped, so it is valid and aligned for an AtomicU64
    // for the rest of the process; it is only ever accessed atomically.
    Some(unsafe { AtomicU64::from_ptr(address as *mut u64) })
}

fn map_wipe_on_fork_page() -> Option<usize> {
    const PAGE_LEN: usize = 4096;
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing touches no existing memory; the result is checked.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: `page` is the mapping just made, PAGE_LEN long.
    if unsafe { libc::madvise(page, PAGE_LEN, libc::MADV_WIPEONFORK) } != 0 {
        // SAFETY: same mapping; nothing else refers to it yet.
        unsafe { libc::munmap(page, PAGE_LEN) };
        return None;
    }
    // Belt and braces, for emulators and sandboxes that accept the advice
    // without honouring it: a child forked through libc clears the epoch
    // itself. (A failed registration leaves the page alone doing it.)
    // SAFETY: registers a handler that only stores to an atomic, which is
    // async-signal-safe, as a child handler must be.
    unsafe { libc::pthread_atfork(None, None, Some(clear_epoch_in_child)) };
    Some(page as usize)
}

extern "C" fn clear_epoch_in_child() {
    if let Some(cell) = FORK_EPOCH_PAGE.get().copied().flatten() {
        // SAFETY: as in `fork_epoch_cell`: the page outlives the process.
        unsafe { AtomicU64::from_ptr(cell as *mut u64) }.store(0, Ordering::Release);
    }
}

/// The current epoch: nonzero, and different in a forked child from any
/// epoch its parent's generators were seeded in.
fn current_epoch() -> Result<u64, CryptoError> {
    let Some(cell) = fork_epoch_cell() else { return Ok(u64::from(std::process::id())) };
    let epoch = cell.load(Ordering::Acquire);
    if epoch != 0 {
        return Ok(epoch);
    }
    // First use, or the first call in a forked child: a random epoch, so
    // it cannot equal one a generator inherited from the parent holds.
    let fresh = loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
        let candidate = u64::from_le_bytes(bytes);
        if candidate != 0 {
            break candidate;
        }
    };
    Ok(match cell.compare_exchange(0, fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => fresh,
        Err(raced) => raced,
    })
}

/// Fills `buffer` from this thread's generator.
pub(crate) fn random_bytes(buffer: &mut [u8]) -> Result<(), CryptoError> {
    let epoch = current_epoch()?;
    GENERATOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|generator| generator.epoch != epoch) {
            let mut seed = zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(seed.as_mut()).map_err(|_| CryptoError::Random)?;
            *slot = Some(Generator {
                seed,
                counter: 0,
                epoch,
                buffer: zeroize::Zeroizing::new([0u8; BUFFER_LEN]),
                used: BUFFER_LEN,
            });
        }
        let generator = slot.as_mut().expect("initialised above");
        let mut filled = 0;
        while filled < buffer.len() {
            if generator.used == BUFFER_LEN {
                generator.counter += 1;
                let mut hasher = blake3::Hasher::new_keyed(&generator.seed);
                hasher.update(&generator.counter.to_le_bytes());
                hasher.finalize_xof().fill(generator.buffer.as_mut());
                generator.used = 0;
            }
            let take = (buffer.len() - filled).min(BUFFER_LEN - generator.used);
            let source = &mut generator.buffer[generator.used..generator.used + take];
            buffer[filled..filled + take].copy_from_slice(source);
            source.fill(0);
            generator.used += take;
            filled += take;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::random_bytes;

    /// A forked child must not hand out what its parent hands out next:
    /// both draw after the fork from a generator seeded before it.
    #[test]
    fn a_forked_child_does_not_replay_its_parents_stream() {
        let mut warm = [0u8; 8];
        random_bytes(&mut warm).unwrap();
        let mut pipe = [0 as libc::c_int; 2];
        // SAFETY: `pipe` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        // SAFETY: the child only draws (no allocation, no lock: the
        // generator and the epoch page were set up above), writes to the
        // pipe and leaves with `_exit`.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            let mut drawn = [0u8; 32];
            let status = match random_bytes(&mut drawn) {
                // SAFETY: `drawn` is 32 readable bytes; `pipe[1]` is open.
                Ok(()) if unsafe { libc::write(pipe[1], drawn.as_ptr().cast(), 32) } == 32 => 0,
                _ => 1,
            };
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(status) };
        }
        let mut parent = [0u8; 32];
        random_bytes(&mut parent).unwrap();
        let mut from_child = [0u8; 32];
        // SAFETY: `from_child` has room for 32 bytes; `pipe[0]` is open.
        let read = unsafe { libc::read(pipe[0], from_child.as_mut_ptr().cast(), 32) };
        let mut status = 0;
        // SAFETY: waits for the child made above.
        unsafe { libc::waitpid(child, &mut status, 0) };
        // SAFETY: both descriptors are ours and still open.
        unsafe {
            libc::close(pipe[0]);
            libc::close(pipe[1]);
        }
        assert_eq!(read, 32, "the child wrote its draw");
        assert_eq!(status, 0);
        assert_ne!(parent, from_child, "the child replayed its parent's stream");
    }
}
