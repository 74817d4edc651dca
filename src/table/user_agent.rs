//! What a request's `User-Agent` says: the browser, the operating system and the kind of
//! device, as the `woothee` crate reads them (its project's shared test cases keep it
//! current). Read once per distinct header and remembered per thread, so a request pays a
//! lookup, never a parse per event.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Longest `User-Agent` kept, in bytes (cut at a character boundary). Real ones are under
/// 300 bytes; more is a client sending something else in the header.
pub const MAX_USER_AGENT_BYTES: usize = 512;
/// Distinct headers remembered per HTTP worker thread; past it the memory is cleared and
/// filled again (a few dozen browsers' headers make up nearly all traffic).
const REMEMBERED: usize = 1024;

/// What one header says; empty where it says nothing known.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Described {
    /// `Chrome`, `Safari`, `Firefox`, `Googlebot`.
    pub browser: String,
    /// `Windows 10`, `Mac OSX`, `iOS`, `Android`.
    pub os: String,
    /// `pc`, `smartphone`, `mobilephone`, `crawler`, `appliance`, `misc`.
    pub device: String,
}

thread_local! {
    static SEEN: RefCell<HashMap<String, Rc<Described>>> = RefCell::new(HashMap::new());
}

/// `header` bounded to [`MAX_USER_AGENT_BYTES`].
pub fn bounded(header: &str) -> &str {
    if header.len() <= MAX_USER_AGENT_BYTES {
        return header;
    }
    let mut end = MAX_USER_AGENT_BYTES;
    while !header.is_char_boundary(end) {
        end -= 1;
    }
    &header[..end]
}

/// What `header` says, parsed on this thread's first sight of it.
pub fn describe(header: &str) -> Rc<Described> {
    let header = bounded(header);
    SEEN.with(|seen| {
        if let Some(found) = seen.borrow().get(header) {
            return found.clone();
        }
        let known = |s: &str| match s {
            woothee::woothee::VALUE_UNKNOWN => String::new(),
            s => s.to_string(),
        };
        let described = Rc::new(match woothee::parser::Parser::new().parse(header) {
            Some(found) => Described {
                browser: known(found.name),
                os: known(found.os),
                device: known(found.category),
            },
            None => Described::default(),
        });
        let mut seen = seen.borrow_mut();
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert(header.to_string(), described.clone());
        described
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_an_os_and_a_device_are_read_from_the_header() {
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like \
                      Gecko) Chrome/120.0.0.0 Safari/537.36";
        let found = describe(chrome);
        assert_eq!(
            (
                found.browser.as_str(),
                found.os.as_str(),
                found.device.as_str()
            ),
            ("Chrome", "Windows 10", "pc")
        );
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 \
                      (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
        let found = describe(iphone);
        assert_eq!(
            (
                found.browser.as_str(),
                found.os.as_str(),
                found.device.as_str()
            ),
            ("Safari", "iPhone", "smartphone")
        );
        let curl = describe("curl/8.5.0");
        assert_eq!(
            (
                curl.browser.as_str(),
                curl.os.as_str(),
                curl.device.as_str()
            ),
            ("HTTP Library", "", "misc")
        );
        assert_eq!(*describe("?"), Described::default());
        assert_eq!(bounded(&"é".repeat(400)).len(), 512);
    }
}
