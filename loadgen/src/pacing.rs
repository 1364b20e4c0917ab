//! Open-loop sends on time. Tokio's timers round a deadline up to the next
//! millisecond tick: measured here, open-loop requests started 1 ms late on
//! average, and the latency charged from the intended send time (as it must
//! be, against coordinated omission) then held the harness's own lateness.
//! A `timerfd` fires on the kernel's high-resolution timers instead (within
//! the thread's timer slack, 50 µs by default), still without a thread of
//! its own or spinning.

use rustix::time::{timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags};
use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;

/// One worker's timer: a timerfd, or tokio's timer where none can be had.
#[derive(Debug)]
pub struct Pacer {
    timer: Option<AsyncFd<OwnedFd>>,
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new()
    }
}

impl Pacer {
    pub fn new() -> Self {
        let timer = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)
            .map_err(io::Error::from)
            // SAFETY: the timerfd is owned by the `AsyncFd` from here until
            // it is dropped, so it stays open and names the same timer for as
            // long as tokio's reactor watches it.
            .and_then(|fd| unsafe { AsyncFd::register(fd) }.map_err(io::Error::from));
        match timer {
            Ok(timer) => Self { timer: Some(timer) },
            Err(error) => {
                eprintln!("open loop: no timerfd ({error}); sends may start up to 1 ms late");
                Self { timer: None }
            }
        }
    }

    /// Returns at `deadline` (at once if it has passed).
    pub async fn sleep_until(&self, deadline: Instant) {
        let Some(timer) = &self.timer else {
            return tokio::time::sleep_until(deadline.into()).await;
        };
        if let Err(error) = Self::fire_at(timer, deadline).await {
            eprintln!("open loop: timerfd failed ({error}); this send uses tokio's timer");
            tokio::time::sleep_until(deadline.into()).await;
        }
    }

    async fn fire_at(timer: &AsyncFd<OwnedFd>, deadline: Instant) -> io::Result<()> {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Ok(());
        }
        let zero = timespec(Duration::ZERO);
        let once = Itimerspec { it_interval: zero, it_value: timespec(wait) };
        timerfd_settime(timer.get_ref(), TimerfdTimerFlags::empty(), &once)?;
        loop {
            let mut ready = timer.readable().await?;
            let mut expirations = [0u8; 8];
            match rustix::io::read(ready.get_inner(), &mut expirations) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

fn timespec(duration: Duration) -> rustix::time::Timespec {
    rustix::time::Timespec { tv_sec: duration.as_secs() as i64, tv_nsec: i64::from(duration.subsec_nanos()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn median(mut values: Vec<Duration>) -> Duration {
        values.sort_unstable();
        values[values.len() / 2]
    }

    #[tokio::test]
    async fn wakes_at_the_deadline_not_at_the_next_millisecond_tick() {
        let pacer = Pacer::new();
        assert!(pacer.timer.is_some(), "no timerfd");
        let (mut pacer_late, mut tokio_late) = (Vec::new(), Vec::new());
        // Interleaved, so that a load spike on the machine hits both alike.
        for _ in 0..40 {
            let deadline = Instant::now() + Duration::from_micros(300);
            pacer.sleep_until(deadline).await;
            let woke = Instant::now();
            assert!(woke >= deadline, "woke {:?} early", deadline - woke);
            pacer_late.push(woke - deadline);
            let deadline = Instant::now() + Duration::from_micros(300);
            tokio::time::sleep_until(deadline.into()).await;
            tokio_late.push(Instant::now().saturating_duration_since(deadline));
        }
        let (pacer_late, tokio_late) = (median(pacer_late), median(tokio_late));
        assert!(pacer_late < tokio_late, "pacer {pacer_late:?} late, tokio's timer {tokio_late:?}");
        // A deadline already past returns at once.
        pacer.sleep_until(Instant::now() - Duration::from_millis(1)).await;
    }
}
