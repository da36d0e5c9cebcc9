//! Polling before sleeping: a serving thread that has just echoed keeps looking for new events
//! for a short, bounded while before it sleeps in `epoll_wait`.
//!
//! Why: a client that writes a message and then blocks in `read` until the answer comes (most
//! programs that talk to a Unix socket) sends its next message a few microseconds after our
//! echo. A thread that went to sleep the instant it ran out of work pays a wake-up for every
//! such message — most of a round trip on a small machine. Polling instead finds the message
//! as soon as it is queued. The same idea as Seastar's reactor (`--idle-poll-time-us`), KVM's
//! halt-polling and Go's spinning scheduler threads; Linux's own `busy_poll` does not cover
//! `AF_UNIX`.
//!
//! How: every serving thread runs one [`run`] task. After an echo on its thread
//! ([`worked`]), it yields in a loop: with nothing else to run, tokio's current-thread
//! scheduler answers a yield by polling its epoll set with a zero timeout and running
//! whatever that woke — exactly a polling loop, with every connection on the thread served
//! from it. Between two looks it pauses for about a microsecond ([`PAUSES`]). When a whole window passes without an echo, the task sleeps until the next
//! echo wakes it (a same-thread wake: no system call), and the thread sleeps in
//! `epoll_wait` as before.
//!
//! The window adapts like KVM's halt-polling ([`Window`]): it grows when the next message came
//! soon after the thread gave up (a longer poll would have caught it) and shrinks when it came
//! much later than the longest window (polling was wasted), down to nothing. So an idle server
//! never polls, a trickle of messages farther apart than the window costs only the wake-ups it
//! always cost, and a thread polls only after work of its own: one busy connection on a
//! 64-thread server keeps one core polling, not 64.

use std::cell::Cell;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The shortest window worth polling, and where a window grows from.
const GROW_FROM: Duration = Duration::from_micros(10);

/// Spin-wait hints between two looks at the epoll set (about a microsecond): a sibling
/// hyperthread keeps its share of the core, and the epoll set's lock, which every wake-up of
/// this thread's sockets takes, is not held by a zero-timeout `epoll_wait` back to back.
/// Measured at 100 busy connections on 2 vCPUs: without them the generator beside the server
/// lost 7% of its round trips and the server spent 9% more CPU per round trip than with
/// polling off; with them neither, and the blocking client keeps its gain.
const PAUSES: usize = 32;

/// This thread's echoes, as the poller sees them.
struct Activity {
    /// Echoes made on this thread (wrapping): the poller compares it with what it saw.
    echoes: Cell<u64>,
    /// The poller's waker while it sleeps; the first echo after takes it and wakes the poller.
    sleeper: Cell<Option<Waker>>,
}

thread_local! {
    static ACTIVITY: Activity = const {
        Activity {
            echoes: Cell::new(0),
            sleeper: Cell::new(None),
        }
    };
}

/// An echo happened on this thread: the poller, if it sleeps, starts polling again. A few
/// nanoseconds, on the echo path of every connection.
#[inline]
pub(crate) fn worked() {
    ACTIVITY.with(|activity| {
        activity.echoes.set(activity.echoes.get().wrapping_add(1));
        if let Some(waker) = activity.sleeper.take() {
            waker.wake();
        }
    });
}

fn echoes() -> u64 {
    ACTIVITY.with(|activity| activity.echoes.get())
}

/// How long a thread polls after its last echo, adapted to what polling catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// The poll a thread makes now; zero: it sleeps at once.
    current: Duration,
    /// The longest it may become: `--busy-poll`.
    max: Duration,
}

impl Window {
    /// A window of at most `max`, starting there (zero: never polls).
    pub(crate) fn new(max: Duration) -> Window {
        Window { current: max, max }
    }

    /// The poll to make now.
    pub(crate) fn current(self) -> Duration {
        self.current
    }

    /// The thread polled for the current window, slept, and the next echo came `idle` after
    /// the last one. If a window of at most `max` would have caught it, grow (doubling from
    /// [`GROW_FROM`]); if it came later than that, polling was wasted: shrink (halving, to
    /// zero below [`GROW_FROM`]).
    pub(crate) fn adapt(&mut self, idle: Duration) {
        if idle <= self.current {
            return;
        }
        self.current = if idle <= self.max {
            (self.current * 2).max(GROW_FROM).min(self.max)
        } else if self.current / 2 < GROW_FROM {
            Duration::ZERO
        } else {
            self.current / 2
        };
    }
}

/// This thread's poller, for the life of the thread's runtime; `max` zero: none.
pub(crate) async fn run(max: Duration) {
    if max.is_zero() {
        return;
    }
    let mut window = Window::new(max);
    let mut seen = echoes();
    let mut last = Instant::now();
    loop {
        // Poll: each yield lets the runtime poll its epoll set without blocking and run what
        // that woke, then comes back here. Every echo moves the window's end.
        let mut until = last + window.current();
        while !window.current().is_zero() {
            tokio::task::yield_now().await;
            for _ in 0..PAUSES {
                std::hint::spin_loop();
            }
            let now = Instant::now();
            let count = echoes();
            if count != seen {
                seen = count;
                last = now;
                until = now + window.current();
            } else if now >= until {
                break;
            }
        }
        // Sleep until the next echo on this thread.
        std::future::poll_fn(|cx| {
            if echoes() != seen {
                return Poll::Ready(());
            }
            ACTIVITY.with(|activity| activity.sleeper.set(Some(cx.waker().clone())));
            Poll::Pending
        })
        .await;
        seen = echoes();
        let now = Instant::now();
        window.adapt(now - last);
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(100);

    #[test]
    fn a_window_starts_at_its_longest_and_never_passes_it() {
        let mut window = Window::new(MAX);
        assert_eq!(window.current(), MAX);
        for _ in 0..10 {
            window.adapt(Duration::from_micros(150));
            window.adapt(Duration::from_micros(90));
            assert!(window.current() <= MAX, "{window:?}");
        }
    }

    #[test]
    fn a_trickle_slower_than_the_longest_window_shrinks_it_to_nothing() {
        let mut window = Window::new(MAX);
        let mut steps = 0;
        while !window.current().is_zero() {
            window.adapt(Duration::from_millis(1));
            steps += 1;
            assert!(steps < 10, "{window:?}");
        }
        // And it stays off while messages stay that far apart.
        window.adapt(Duration::from_millis(1));
        assert_eq!(window.current(), Duration::ZERO);
    }

    #[test]
    fn messages_a_longer_window_would_have_caught_grow_it_back() {
        let mut window = Window::new(MAX);
        for _ in 0..10 {
            window.adapt(Duration::from_secs(1));
        }
        assert_eq!(window.current(), Duration::ZERO);
        window.adapt(Duration::from_micros(30));
        assert_eq!(window.current(), GROW_FROM);
        window.adapt(Duration::from_micros(30));
        window.adapt(Duration::from_micros(30));
        assert!(window.current() >= Duration::from_micros(30), "{window:?}");
    }

    #[test]
    fn off_is_off() {
        let mut window = Window::new(Duration::ZERO);
        window.adapt(Duration::from_nanos(1));
        assert_eq!(window.current(), Duration::ZERO);
    }

    /// The poller sleeps until an echo on its thread, then polls; an idle thread is left
    /// alone.
    #[tokio::test]
    async fn the_poller_sleeps_until_an_echo_and_then_polls() {
        let poller = tokio::spawn(run(Duration::from_millis(5)));
        // Let it use up its first window and go to sleep.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let asleep = ACTIVITY.with(|a| {
            let waker = a.sleeper.take();
            let asleep = waker.is_some();
            a.sleeper.set(waker);
            asleep
        });
        assert!(asleep, "the poller sleeps once its window is over");
        worked();
        let woken = ACTIVITY.with(|a| {
            let waker = a.sleeper.take();
            let woken = waker.is_none();
            a.sleeper.set(waker);
            woken
        });
        assert!(woken, "an echo takes the poller's waker");
        poller.abort();
    }
}
