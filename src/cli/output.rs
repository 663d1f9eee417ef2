//! What the commands print: JSON for scripts, text for people.

use anyhow::Result;

/// Prints `value` as JSON for scripts, else `text` for people.
pub fn say(json: bool, value: serde_json::Value, text: String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else if !text.is_empty() {
        println!("{text}");
    }
    Ok(())
}
