//! What the commands print: JSON for scripts, text for people.

use anyhow::Result;

/// Prints `value` as JSON for scripts (pretty, in its own field order),
/// else `text` for people (nothing when empty).
pub fn say<T: serde::Serialize + ?Sized>(json: bool, value: &T, text: &str) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else if !text.is_empty() {
        println!("{text}");
    }
    Ok(())
}
