//! Runs named checks, one line each, and a closing `N passed, M failed` line.

use std::time::Instant;

/// Collects scenario results.
pub(crate) struct Scenarios {
    suite: &'static str,
    passed: usize,
    failed: Vec<String>,
}

impl Scenarios {
    pub(crate) fn new(suite: &'static str) -> Self {
        Scenarios {
            suite,
            passed: 0,
            failed: Vec::new(),
        }
    }

    /// Runs one scenario; a panic inside counts as a failure with its message.
    pub(crate) fn run(&mut self, name: &str, check: impl FnOnce() -> Result<(), String>) {
        let start = Instant::now();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned());
                Err(msg)
            });
        let ms = start.elapsed().as_millis();
        match outcome {
            Ok(()) => {
                self.passed += 1;
                println!("{}: {name} ... ok ({ms} ms)", self.suite);
            }
            Err(why) => {
                println!(
                    "{}: {name} ... FAILED ({ms} ms)\n    {}",
                    self.suite,
                    why.replace('\n', "\n    ")
                );
                self.failed.push(name.to_owned());
            }
        }
    }

    /// Prints the closing line; an error if anything failed.
    pub(crate) fn finish(self) -> Result<(), String> {
        println!(
            "{}: {} passed, {} failed",
            self.suite,
            self.passed,
            self.failed.len()
        );
        if self.failed.is_empty() {
            Ok(())
        } else {
            Err(format!("{} failed: {}", self.suite, self.failed.join(", ")))
        }
    }
}

/// Turns a condition into a scenario error.
pub(crate) fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}

/// Checks that `got` is exactly `want`; the error says how many bytes arrived and whether
/// they differ (`what` names who received them).
pub(crate) fn same_bytes(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    ensure(got == want, || {
        format!(
            "{what} {} of {} bytes{}",
            got.len(),
            want.len(),
            if got.len() == want.len() {
                ", with different content"
            } else {
                ""
            }
        )
    })
}
