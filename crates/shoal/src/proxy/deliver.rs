//! deliver: a response built from a stored (possibly still filling) object: conditional
//! requests answered with 304, HEAD from a stored GET, single and multiple ranges, and the whole
//! body otherwise. The body is never copied: readers hand out the stored chunks.

use std::sync::Arc;

use http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_LOCATION, CONTENT_RANGE, CONTENT_TYPE, DATE, ETAG, EXPIRES,
    IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE, VARY,
};
use http::{HeaderMap, Method, StatusCode};

use super::response::{Multipart, Reader, Source};
use super::slices::SlicedBody;
use super::{
    error_response, fetch, now_millis, Exchange, Proxy, ProxyError, ProxyResponse, ResponseBody,
    ResponseHeaders,
};
use crate::cache::conditional;
use crate::cache::range::{self, RangeRequest};
use crate::cache::CacheStatus;
use crate::store::{FillState, Object};

/// Fields a 304 carries (RFC 9110 §15.4.5).
const NOT_MODIFIED_FIELDS: [http::HeaderName; 7] = [
    CACHE_CONTROL,
    CONTENT_LOCATION,
    DATE,
    ETAG,
    EXPIRES,
    VARY,
    LAST_MODIFIED,
];

impl Proxy {
    /// Builds the response for `request` from `object`.
    pub(super) async fn deliver(
        self: &Arc<Self>,
        object: &Arc<Object>,
        exchange: &Exchange,
        cache_status: CacheStatus,
    ) -> ProxyResponse {
        // Only a range of a body of unknown length waits (for the end of the body); keeping the
        // waiting out of `respond_from` keeps this future, which every hit carries, small.
        loop {
            if let Some(response) = self.respond_from(object, exchange, cache_status) {
                return response;
            }
            object.wait_end().await;
        }
    }

    /// The response from `object`, or `None` when it cannot be built before the object's body
    /// is complete.
    fn respond_from(
        self: &Arc<Self>,
        object: &Arc<Object>,
        exchange: &Exchange,
        cache_status: CacheStatus,
    ) -> Option<ProxyResponse> {
        let request = &exchange.request;
        let meta = object.meta_full();
        // The head of a sliced object reads its body from the slices.
        let sliced = match meta.slice_size {
            0 => None,
            _ => {
                let forwarded = fetch::forwarded_request(self, request);
                match SlicedBody::new(self, exchange.key, object, forwarded) {
                    Some(body) => Some(body),
                    None => {
                        return Some(error_response(&ProxyError::Internal(
                            "a sliced object without a version",
                        )))
                    }
                }
            }
        };
        let age = Some(meta.timing.current_age(now_millis()) / 1000);
        let headers = &request.head.headers;
        let answer = |cache_status, status, headers, body| {
            Some(ProxyResponse {
                status,
                headers,
                age,
                cache_status,
                body,
                close: false,
                origin: None,
            })
        };
        let response = |status, headers, body| answer(cache_status, status, headers, body);
        // A hit on a sliced object's head whose body needs slices not stored yet is a miss:
        // those bytes come from the origin now (docs/caching.md, "Slices").
        let label = |parts: &[(u64, u64)]| match &sliced {
            Some(body)
                if cache_status == CacheStatus::Hit
                    && !parts.iter().all(|&(start, end)| body.holds(start, end)) =>
            {
                CacheStatus::Miss
            }
            _ => cache_status,
        };

        let precondition =
            headers.contains_key(IF_MATCH) || headers.contains_key(IF_UNMODIFIED_SINCE);
        if precondition
            && meta.status.is_success()
            && conditional::precondition_failed(
                headers,
                meta.fields.etag(),
                meta.fields.last_modified(),
            )
        {
            return response(
                StatusCode::PRECONDITION_FAILED,
                ResponseHeaders::Map(HeaderMap::new()),
                ResponseBody::Empty,
            );
        }
        let conditional =
            headers.contains_key(IF_NONE_MATCH) || headers.contains_key(IF_MODIFIED_SINCE);
        // Without Last-Modified, If-Modified-Since is held against the stored response's Date
        // (or when it arrived, which is what `timing.date` holds without one): RFC 9111 §4.3.2.
        if conditional
            && meta.status.is_success()
            && conditional::not_modified(
                headers,
                meta.fields.etag(),
                Some(meta.fields.last_modified().unwrap_or(meta.timing.date)),
            )
        {
            let mut fields = HeaderMap::new();
            for name in NOT_MODIFIED_FIELDS {
                for value in meta.fields.get_all(&name) {
                    fields.append(name.clone(), value);
                }
            }
            return response(
                StatusCode::NOT_MODIFIED,
                ResponseHeaders::Map(fields),
                ResponseBody::Empty,
            );
        }

        let bodiless = matches!(
            meta.status,
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        ) || meta.status.is_informational();
        let known_length = match (&sliced, object.state()) {
            (Some(body), _) => Some(body.length()),
            (_, FillState::Complete) => Some(object.length()),
            _ => meta.content_length,
        };
        if request.head.method == Method::HEAD || bodiless {
            let body = if bodiless {
                ResponseBody::Empty
            } else {
                ResponseBody::Omitted(known_length)
            };
            return response(meta.status, ResponseHeaders::Stored(meta), body);
        }

        if meta.status == StatusCode::OK
            && headers.contains_key(RANGE)
            && conditional::range_applies(headers, meta.fields.etag(), meta.fields.last_modified())
        {
            // Without a declared length the end of the object is unknown until it is all here.
            let length = match (known_length, object.state()) {
                (Some(length), _) => length,
                (None, FillState::Filling) => return None,
                (None, _) => object.length(),
            };
            let range_header = headers.get(RANGE).and_then(|v| v.to_str().ok());
            match range::resolve(range_header, length) {
                RangeRequest::Whole => {}
                RangeRequest::Unsatisfiable => {
                    let mut fields = HeaderMap::new();
                    fields.insert(CONTENT_RANGE, content_range(None, length));
                    if let Some(date) = meta.fields.get(&DATE) {
                        fields.insert(DATE, date);
                    }
                    return response(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        ResponseHeaders::Map(fields),
                        ResponseBody::Empty,
                    );
                }
                RangeRequest::Parts(parts) if parts.len() == 1 => {
                    let part = parts[0];
                    let mut fields = meta.fields.to_map();
                    fields.insert(
                        CONTENT_RANGE,
                        content_range(Some((part.start, part.end)), length),
                    );
                    let body = ResponseBody::Object {
                        reader: Reader::of(object, sliced.as_ref(), part.start, Some(part.end)),
                        length: Some(part.end - part.start),
                    };
                    return answer(
                        label(&[(part.start, part.end)]),
                        StatusCode::PARTIAL_CONTENT,
                        ResponseHeaders::Map(fields),
                        body,
                    );
                }
                RangeRequest::Parts(parts) => {
                    let boundary = format!(
                        "shoal{:016x}",
                        object.as_ref() as *const Object as usize as u64 ^ now_millis()
                    );
                    let mut fields = meta.fields.to_map();
                    let content_type = fields.remove(CONTENT_TYPE);
                    if let Ok(value) =
                        HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
                    {
                        fields.insert(CONTENT_TYPE, value);
                    }
                    let source = match &sliced {
                        Some(body) => Source::Slices(Arc::clone(body)),
                        None => Source::Object(Arc::clone(object)),
                    };
                    let multipart = Multipart::new(
                        source,
                        &parts,
                        length,
                        content_type.as_ref().map(|v| v.as_bytes()),
                        &boundary,
                    );
                    let spans: Vec<(u64, u64)> =
                        parts.iter().map(|part| (part.start, part.end)).collect();
                    return answer(
                        label(&spans),
                        StatusCode::PARTIAL_CONTENT,
                        ResponseHeaders::Map(fields),
                        ResponseBody::Multipart(multipart),
                    );
                }
            }
        }

        let whole = (0, known_length.unwrap_or(0));
        let body = ResponseBody::Object {
            reader: Reader::of(object, sliced.as_ref(), 0, None),
            length: known_length,
        };
        answer(
            label(&[whole]),
            meta.status,
            ResponseHeaders::Stored(meta),
            body,
        )
    }
}

fn content_range(range: Option<(u64, u64)>, length: u64) -> HeaderValue {
    let text = match range {
        Some((start, end)) => format!("bytes {}-{}/{}", start, end - 1, length),
        None => format!("bytes */{length}"),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}
