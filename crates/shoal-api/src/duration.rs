//! Durations as people write them in the config and on the command line.

use std::time::Duration;

/// `500ms`, `30s`, `5m`, `2h`, `1d`, or a plain number of seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("`{text}` is not a duration: expected a number followed by ms, s, m, h or d")
    })?;
    Ok(match unit.trim() {
        "ms" => Duration::from_millis(number),
        "" | "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        "d" => Duration::from_secs(number.saturating_mul(86_400)),
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{text}`: expected ms, s, m, h or d"
            ))
        }
    })
}
