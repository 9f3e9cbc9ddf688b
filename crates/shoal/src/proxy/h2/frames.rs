//! Where an HTTP/2 connection's input stands, read from its frame headers as the bytes go by:
//! inside the preface, inside a frame (of which type), inside a header block that
//! CONTINUATION frames must finish, or between frames. hyper decodes the frames; it does not
//! say how long a client has left a frame or a header block unfinished, which is what the
//! connection's timeouts need (`super::watch`). Nine bytes of header per frame are all this
//! reads: no payload is parsed, so a frame hyper would refuse costs nothing here.

/// Bytes of the client connection preface (RFC 9113 §3.4).
const PREFACE_LENGTH: u8 = 24;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// The reader's place in a connection's input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameTracker {
    preface_left: u8,
    header: [u8; 9],
    header_length: u8,
    payload_left: u32,
    frame_type: u8,
    flags: u8,
    /// A HEADERS or PUSH_PROMISE without END_HEADERS has ended; CONTINUATION must follow.
    header_block: bool,
    /// A whole SETTINGS frame has arrived (the client's first frame, RFC 9113 §3.4).
    settings: bool,
}

/// What the connection is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// Nothing: the input is between two frames.
    Nothing,
    /// The rest of the preface, of a frame other than DATA, or of a header block.
    Head,
    /// The rest of a DATA frame (a request body).
    Data,
}

impl Default for FrameTracker {
    fn default() -> Self {
        FrameTracker::new()
    }
}

impl FrameTracker {
    /// A tracker for a connection whose first byte is the first of the preface.
    pub fn new() -> FrameTracker {
        FrameTracker {
            preface_left: PREFACE_LENGTH,
            header: [0; 9],
            header_length: 0,
            payload_left: 0,
            frame_type: 0,
            flags: 0,
            header_block: false,
            settings: false,
        }
    }

    /// Takes the next bytes of the input.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        let preface = bytes.len().min(self.preface_left as usize);
        self.preface_left -= preface as u8;
        bytes = &bytes[preface..];
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = bytes.len().min(self.payload_left as usize);
                self.payload_left -= take as u32;
                bytes = &bytes[take..];
                if self.payload_left == 0 {
                    self.end_frame();
                }
                continue;
            }
            let start = self.header_length as usize;
            let take = bytes.len().min(9 - start);
            self.header[start..start + take].copy_from_slice(&bytes[..take]);
            self.header_length += take as u8;
            bytes = &bytes[take..];
            if self.header_length == 9 {
                self.header_length = 0;
                let [high, middle, low, frame_type, flags, ..] = self.header;
                self.payload_left = u32::from_be_bytes([0, high, middle, low]);
                self.frame_type = frame_type;
                self.flags = flags;
                if self.payload_left == 0 {
                    self.end_frame();
                }
            }
        }
    }

    fn end_frame(&mut self) {
        match self.frame_type {
            HEADERS | PUSH_PROMISE => self.header_block = self.flags & END_HEADERS == 0,
            CONTINUATION if self.flags & END_HEADERS != 0 => self.header_block = false,
            SETTINGS => self.settings = true,
            _ => {}
        }
    }

    /// Whether the preface and a first SETTINGS frame have arrived.
    pub fn handshake_complete(&self) -> bool {
        self.preface_left == 0 && self.settings
    }

    /// What the input is in the middle of.
    pub fn waiting(&self) -> Waiting {
        let inside_frame = self.header_length > 0 || self.payload_left > 0;
        if self.preface_left > 0 && self.preface_left < PREFACE_LENGTH {
            Waiting::Head
        } else if self.payload_left > 0 && self.header_length == 0 && self.frame_type == DATA {
            Waiting::Data
        } else if inside_frame || self.header_block {
            Waiting::Head
        } else {
            Waiting::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(frame_type: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let length = (payload.len() as u32).to_be_bytes();
        let mut bytes = vec![
            length[1], length[2], length[3], frame_type, flags, 0, 0, 0, 1,
        ];
        bytes.extend_from_slice(payload);
        bytes
    }

    /// Feeds `parts` one after the other and gives what the tracker waits for after each.
    fn check(parts: &[&[u8]], expected: &[(Waiting, bool)]) {
        let mut tracker = FrameTracker::new();
        for (index, part) in parts.iter().enumerate() {
            tracker.feed(part);
            let state = (tracker.waiting(), tracker.handshake_complete());
            assert_eq!(state, expected[index], "after part {index}");
        }
    }

    #[test]
    fn the_tracker_knows_what_the_input_is_in_the_middle_of() {
        let settings = frame(SETTINGS, 0, &[0, 3, 0, 0, 0, 100]);
        let open_headers = frame(HEADERS, 0, b"abc");
        let closed_headers = frame(HEADERS, END_HEADERS, b"abc");
        let continuation = frame(CONTINUATION, END_HEADERS, b"de");
        let data = frame(DATA, 0, &[7; 100]);
        use Waiting::*;
        check(
            &[
                &PREFACE[..10],
                &PREFACE[10..],
                &settings[..5],
                &settings[5..],
            ],
            &[
                (Head, false),
                (Nothing, false),
                (Head, false),
                (Nothing, true),
            ],
        );
        check(
            &[
                PREFACE,
                &settings,
                &open_headers,
                &continuation[..4],
                &continuation[4..],
            ],
            &[
                (Nothing, false),
                (Nothing, true),
                (Head, true),
                (Head, true),
                (Nothing, true),
            ],
        );
        check(
            &[
                PREFACE,
                &settings,
                &closed_headers,
                &data[..50],
                &data[50..],
            ],
            &[
                (Nothing, false),
                (Nothing, true),
                (Nothing, true),
                (Data, true),
                (Nothing, true),
            ],
        );
        // A frame header cut in two is a head being received, even after a DATA frame.
        check(
            &[PREFACE, &settings, &data, &closed_headers[..3]],
            &[
                (Nothing, false),
                (Nothing, true),
                (Nothing, true),
                (Head, true),
            ],
        );
    }

    #[test]
    fn any_split_of_the_input_ends_in_the_same_place() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(SETTINGS, 0, &[]));
        input.extend(frame(HEADERS, 0, b"abc"));
        input.extend(frame(CONTINUATION, END_HEADERS, b"d"));
        input.extend(frame(DATA, 1, &[1; 40]));
        input.extend(frame(HEADERS, 0, b"x"));
        let mut whole = FrameTracker::new();
        whole.feed(&input);
        for size in 1..input.len() {
            let mut split = FrameTracker::new();
            for part in input.chunks(size) {
                split.feed(part);
            }
            assert_eq!(split, whole, "in parts of {size}");
        }
        assert_eq!(whole.waiting(), Waiting::Head, "a header block left open");
    }
}
