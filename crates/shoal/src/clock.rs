//! The wall clock of all freshness arithmetic, in milliseconds since the Unix epoch.

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`) for `seconds` since the Unix epoch, made
/// once per second per thread: answers made by the node (files, errors) all carry one, and
/// formatting it for each was a few percent of a small file's first read.
pub fn http_date(seconds: u64) -> http::HeaderValue {
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<Option<(u64, http::HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((at, value)) = &*last {
            if *at == seconds {
                return value.clone();
            }
        }
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
        let value = http::HeaderValue::from_str(&httpdate::fmt_http_date(time))
            .expect("an HTTP date is a valid field value");
        *last = Some((seconds, value.clone()));
        value
    })
}

/// [`http_date`] of now.
pub fn http_date_now() -> http::HeaderValue {
    http_date(now_millis() / 1000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_formatted_once_a_second_and_right() {
        assert_eq!(
            super::http_date(784_111_777),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            super::http_date(784_111_777),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            super::http_date(784_111_778),
            "Sun, 06 Nov 1994 08:49:38 GMT"
        );
    }
}
