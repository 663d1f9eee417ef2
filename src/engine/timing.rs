//! Where an operation's time went, logged at debug level: operators (and
//! the benchmarks) see which step of a slow Mount was slow.

use std::cell::RefCell;
use std::time::Instant;

/// When the operation started, and each step's name and milliseconds.
type Steps = (Instant, Vec<(&'static str, f64)>);

thread_local! {
    static STEPS: RefCell<Option<Steps>> = const { RefCell::new(None) };
}

/// Starts timing the operation running on this thread.
pub fn start() {
    STEPS.with(|s| *s.borrow_mut() = Some((Instant::now(), Vec::new())));
}

/// Ends the step `what` (it began where the previous one ended).
pub fn step(what: &'static str) {
    STEPS.with(|s| {
        if let Some((last, steps)) = s.borrow_mut().as_mut() {
            steps.push((what, last.elapsed().as_secs_f64() * 1e3));
            *last = Instant::now();
        }
    });
}

/// Ends timing and renders the steps, e.g. `open 3.1 ms, map 12.0 ms`.
pub fn finish() -> String {
    STEPS.with(|s| {
        let steps = match s.borrow_mut().take() {
            Some((last, mut steps)) => {
                steps.push(("rest", last.elapsed().as_secs_f64() * 1e3));
                steps
            }
            None => Vec::new(),
        };
        let total = steps.iter().fold(0.0, |sum, (_, ms)| sum + ms);
        let parts: Vec<String> = steps.iter().map(|(w, ms)| format!("{w} {ms:.1}")).collect();
        format!("{total:.1} ms: {}", parts.join(", "))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn steps_are_listed_in_order_and_cleared() {
        super::start();
        super::step("a");
        super::step("b");
        let s = super::finish();
        assert!(s.contains("a ") && s.find("a ").unwrap() < s.find("b ").unwrap(), "{s}");
        assert_eq!(super::finish(), "0.0 ms: ");
    }

    #[test]
    fn the_time_after_the_last_step_is_counted() {
        super::start();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let s = super::finish();
        assert!(s.contains("rest ") && !s.starts_with("0.0"), "{s}");
    }

    #[test]
    fn steps_without_start_are_ignored() {
        super::step("x");
        assert_eq!(super::finish(), "0.0 ms: ");
    }
}
