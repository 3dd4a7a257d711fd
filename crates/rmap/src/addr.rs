//! Parsing what people type: numbers, lengths, addresses (numeric or
//! symbolic), ranges and hex byte strings.
//!
//! Addresses:
//!
//! - `0x7f12345000` (hex) or `139716000000` (decimal); `_` may group digits;
//! - `[heap]`, `[stack]`, `[vdso]`, ...: the start of that region;
//! - a mapped file by path, basename or basename prefix (`/usr/lib/.../libc.so.6`,
//!   `libc.so.6`, `libc`): the lowest address it is mapped at (its load base);
//! - any of these followed by offsets: `[heap]+0x100`, `libc.so.6+0x1000-8`.
//!
//! Ranges: `START-END` or `START..END` (END excluded), each an address as
//! above; or a region name alone (`[heap]`, `libc.so.6`): all of its
//! mappings, from the first start to the last end.

use crate::errors::BadInput;
use crate::maps::Maps;

/// Parses `0x...` (hex) or decimal, with optional `_` separators.
pub fn parse_num(s: &str) -> Result<u64, BadInput> {
    let t = s.trim();
    let (digits, radix) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (t, 10),
    };
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    if clean.is_empty() || digits.starts_with('_') || !clean.chars().all(|c| c.is_digit(radix)) {
        return Err(BadInput(format!(
            "{s:?} is not a number (use hex like 0x7f00 or decimal like 4096)"
        )));
    }
    u64::from_str_radix(&clean, radix)
        .map_err(|_| BadInput(format!("{s:?} is too large for 64 bits")))
}

/// Parses a length: a number with an optional `k`, `m` or `g` suffix
/// (KiB, MiB, GiB); must be more than 0.
pub fn parse_len(s: &str) -> Result<u64, BadInput> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mult) = if !lower.starts_with("0x") {
        let stripped = lower.strip_suffix("ib").unwrap_or(&lower);
        match stripped.chars().last() {
            Some('k') => (&t[..stripped.len() - 1], 1u64 << 10),
            Some('m') => (&t[..stripped.len() - 1], 1 << 20),
            Some('g') => (&t[..stripped.len() - 1], 1 << 30),
            _ => (t, 1),
        }
    } else {
        (t, 1)
    };
    let n = parse_num(num)
        .map_err(|_| BadInput(format!("{s:?} is not a length (e.g. 64, 0x1000, 4k, 2M)")))?;
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| BadInput(format!("length {s:?} is too large")))?;
    if v == 0 {
        return Err(BadInput("a length of 0 asks for nothing".into()));
    }
    Ok(v)
}

/// The base of an address expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    /// A number.
    Num(u64),
    /// A region or file name, resolved against T's maps.
    Name(String),
}

/// An address as typed: a base and a sum of offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrExpr {
    /// The text typed.
    pub raw: String,
    /// Number or name.
    pub base: Base,
    /// Sum of the `+N` / `-N` terms.
    pub delta: i128,
}

/// Parses `+N-M+...` (at least one term); `None` if `s` is not that.
fn parse_terms(s: &str) -> Option<i128> {
    let mut total: i128 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let sign: i128 = match rest.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let body = &rest[1..];
        let end = body.find(['+', '-']).unwrap_or(body.len());
        let n = parse_num(&body[..end]).ok()?;
        total = total.checked_add(sign * i128::from(n))?;
        rest = &body[end..];
    }
    Some(total)
}

fn make_base(b: &str) -> Base {
    match parse_num(b) {
        Ok(n) => Base::Num(n),
        Err(_) => Base::Name(b.to_string()),
    }
}

fn looks_numeric(b: &str) -> bool {
    b.trim().starts_with(|c: char| c.is_ascii_digit())
}

/// Parses an address expression (see the module docs).
pub fn parse_addr(s: &str) -> Result<AddrExpr, BadInput> {
    let raw = s.trim();
    let bad = |why: &str| {
        BadInput(format!(
            "{s:?} is not an address: {why} (use 0x7f00, 4096, [heap], [stack]+0x10, libc.so.6+0x1000)"
        ))
    };
    if raw.is_empty() {
        return Err(bad("it is empty"));
    }
    let (base, delta) = if raw.starts_with('[') {
        let close = raw.find(']').ok_or_else(|| bad("no closing ]"))?;
        let (name, tail) = raw.split_at(close + 1);
        let delta = if tail.is_empty() {
            0
        } else {
            parse_terms(tail).ok_or_else(|| bad("what follows ] is not +N or -N"))?
        };
        (Base::Name(name.to_string()), delta)
    } else {
        // The left-most + or - after which only offsets follow.
        let split = raw
            .char_indices()
            .filter(|&(i, c)| i > 0 && (c == '+' || c == '-'))
            .find_map(|(i, _)| parse_terms(&raw[i..]).map(|d| (i, d)));
        match split {
            Some((i, d)) => (make_base(&raw[..i]), d),
            None => (make_base(raw), 0),
        }
    };
    if let Base::Name(n) = &base {
        if n.starts_with(['+', '-']) {
            return Err(bad("a name or number must come before + or -"));
        }
        if looks_numeric(n) {
            // `12zz` or `0xfoo`: a typo, not a file name.
            return Err(bad(&format!("{n:?} is not a number")));
        }
        if n.contains(char::is_whitespace) && !n.starts_with('[') {
            return Err(bad("it contains spaces"));
        }
    }
    Ok(AddrExpr {
        raw: raw.to_string(),
        base,
        delta,
    })
}

impl AddrExpr {
    /// Whether resolving needs T's maps.
    pub fn needs_maps(&self) -> bool {
        matches!(self.base, Base::Name(_))
    }

    /// The address it denotes in T. `maps` is needed for names.
    pub fn resolve(&self, maps: Option<&Maps>) -> Result<u64, BadInput> {
        let base = match &self.base {
            Base::Num(n) => *n,
            Base::Name(name) => {
                let maps = maps.ok_or_else(|| {
                    BadInput(format!("{name} needs the target's maps to be resolved"))
                })?;
                // `foo-1.so` reads as `foo` minus 1 too: a file whose whole
                // name is the text typed wins.
                if self.raw != *name {
                    let whole = maps.exact(&self.raw);
                    if !whole.is_empty() {
                        return Ok(whole.iter().map(|r| r.start).min().unwrap_or(0));
                    }
                }
                let rs = maps.by_name(name)?;
                rs.iter().map(|r| r.start).min().unwrap_or(0)
            }
        };
        let v = i128::from(base) + self.delta;
        u64::try_from(v).map_err(|_| {
            BadInput(format!(
                "{} is outside the address space ({}{:#x})",
                self.raw,
                if v < 0 { "-" } else { "" },
                v.unsigned_abs()
            ))
        })
    }
}

/// A half-open range `[start, end)` of T's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First address.
    pub start: u64,
    /// One past the last.
    pub end: u64,
}

impl Range {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// The syntactic readings of a range text; which one holds is decided when
/// resolving against T's maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeExpr {
    /// The text typed.
    pub raw: String,
    /// `START-END` or `START..END` readings, most likely first.
    pub spans: Vec<(AddrExpr, AddrExpr)>,
    /// Whether the whole text may be a region name.
    pub may_be_name: bool,
}

fn range_help(s: &str, why: &str) -> BadInput {
    BadInput(format!(
        "{s:?} is not a range: {why} (use START-END such as 0x7f0000-0x7f1000 or \
         [heap]+0x10-[heap]+0x100, START..END, or a region name such as [heap] or libc.so.6)"
    ))
}

/// Parses a range (see the module docs). Fails only when no reading at all
/// is possible.
pub fn parse_range(s: &str) -> Result<RangeExpr, BadInput> {
    let raw = s.trim();
    if raw.is_empty() {
        return Err(range_help(s, "it is empty"));
    }
    let mut spans = Vec::new();
    if let Some((a, b)) = raw.split_once("..") {
        let a = parse_addr(a).map_err(|e| range_help(s, &e.0))?;
        let b = parse_addr(b).map_err(|e| range_help(s, &e.0))?;
        return Ok(RangeExpr {
            raw: raw.to_string(),
            spans: vec![(a, b)],
            may_be_name: false,
        });
    }
    let mut depth = 0i32;
    for (i, c) in raw.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            '-' if depth == 0 && i > 0 => {
                if let (Ok(a), Ok(b)) = (parse_addr(&raw[..i]), parse_addr(&raw[i + 1..])) {
                    spans.push((a, b));
                }
            }
            _ => {}
        }
    }
    let may_be_name = !looks_numeric(raw) && !raw.contains(char::is_whitespace);
    if spans.is_empty() && !may_be_name {
        return Err(range_help(s, "expected START-END"));
    }
    Ok(RangeExpr {
        raw: raw.to_string(),
        spans,
        may_be_name,
    })
}

impl RangeExpr {
    /// Whether resolving needs T's maps.
    pub fn needs_maps(&self) -> bool {
        self.may_be_name
            || self
                .spans
                .iter()
                .any(|(a, b)| a.needs_maps() || b.needs_maps())
    }

    /// The range it denotes in T.
    pub fn resolve(&self, maps: Option<&Maps>) -> Result<Range, BadInput> {
        if self.may_be_name {
            if let Some(m) = maps {
                if let Ok(rs) = m.by_name(&self.raw) {
                    let start = rs.iter().map(|r| r.start).min().unwrap_or(0);
                    let end = rs.iter().map(|r| r.end).max().unwrap_or(0);
                    return Ok(Range { start, end });
                }
            }
        }
        let mut first_err = None;
        for (a, b) in &self.spans {
            match (a.resolve(maps), b.resolve(maps)) {
                (Ok(start), Ok(end)) if start < end => return Ok(Range { start, end }),
                (Ok(start), Ok(end)) => {
                    first_err.get_or_insert(range_help(
                        &self.raw,
                        &format!("its end {end:#x} is not above its start {start:#x}"),
                    ));
                }
                (Err(e), _) | (_, Err(e)) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(
            first_err.unwrap_or_else(|| match maps.map(|m| m.by_name(&self.raw)) {
                Some(Err(e)) => e,
                _ => range_help(&self.raw, "expected START-END"),
            }),
        )
    }
}

/// Parses hex bytes: `deadbeef`, `de ad be ef`, `de:ad:be:ef`,
/// `0xde,0xad`. Each group has an even number of hex digits and is taken
/// as bytes in the order written (`0x1234` is 12 34, not a number).
pub fn parse_hex_bytes(s: &str) -> Result<Vec<u8>, BadInput> {
    let mut out = Vec::new();
    for group in s.split(|c: char| c.is_whitespace() || c == ':' || c == ',') {
        if group.is_empty() {
            continue;
        }
        let g = group
            .strip_prefix("0x")
            .or_else(|| group.strip_prefix("0X"))
            .unwrap_or(group);
        if g.len() % 2 != 0 {
            return Err(BadInput(format!(
                "hex bytes: {group:?} has an odd number of digits (write 0f, not f)"
            )));
        }
        for pair in g.as_bytes().chunks(2) {
            let txt = std::str::from_utf8(pair).unwrap_or("?");
            let b = u8::from_str_radix(txt, 16).map_err(|_| {
                BadInput(format!("hex bytes: {group:?} is not hex (digits 0-9 a-f)"))
            })?;
            out.push(b);
        }
    }
    if out.is_empty() {
        return Err(BadInput(
            "hex bytes: nothing to write (e.g. --hex 'de ad be ef')".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::CANNED;

    #[test]
    fn numbers() {
        assert_eq!(parse_num("0x10").unwrap(), 16);
        assert_eq!(parse_num("0X1f").unwrap(), 31);
        assert_eq!(parse_num("4096").unwrap(), 4096);
        assert_eq!(parse_num("0x7fff_0000").unwrap(), 0x7fff_0000);
        assert_eq!(parse_num(" 12 ").unwrap(), 12);
        assert_eq!(parse_num("0xffffffffffffffff").unwrap(), u64::MAX);
        for bad in [
            "",
            "0x",
            "x10",
            "12a",
            "-1",
            "0x1g",
            "0x1_0000_0000_0000_0000",
            "_1",
        ] {
            assert!(parse_num(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lengths() {
        assert_eq!(parse_len("64").unwrap(), 64);
        assert_eq!(parse_len("0x1000").unwrap(), 4096);
        assert_eq!(parse_len("4k").unwrap(), 4096);
        assert_eq!(parse_len("4KiB").unwrap(), 4096);
        assert_eq!(parse_len("2M").unwrap(), 2 << 20);
        assert_eq!(parse_len("1g").unwrap(), 1 << 30);
        // `0x..b` is hex, not a suffix.
        assert_eq!(parse_len("0x1b").unwrap(), 0x1b);
        for bad in ["0", "k", "", "-4", "4q", "99999999999999999999g", "0xk"] {
            assert!(parse_len(bad).is_err(), "{bad}");
        }
        assert!(parse_len("18014398509481984g").is_err());
    }

    #[test]
    fn addresses_parse() {
        let a = parse_addr("0x7f00").unwrap();
        assert_eq!(a.base, Base::Num(0x7f00));
        assert_eq!(a.delta, 0);
        assert!(!a.needs_maps());
        let a = parse_addr("[heap]+0x100").unwrap();
        assert_eq!(a.base, Base::Name("[heap]".into()));
        assert_eq!(a.delta, 0x100);
        let a = parse_addr("[stack]-16+1").unwrap();
        assert_eq!(a.delta, -15);
        let a = parse_addr("libc.so.6+0x1000").unwrap();
        assert_eq!(a.base, Base::Name("libc.so.6".into()));
        assert_eq!(a.delta, 0x1000);
        let a = parse_addr("ld-linux-x86-64.so.2").unwrap();
        assert_eq!(a.base, Base::Name("ld-linux-x86-64.so.2".into()));
        assert_eq!(a.delta, 0);
        let a = parse_addr("0x1000+0x10").unwrap();
        assert_eq!(a.base, Base::Num(0x1000));
        assert_eq!(a.delta, 0x10);
        for bad in [
            "", "[heap", "[heap]x", "[heap]+", "12zz", "0xzz+1", "a b", "-1", "+0x10",
        ] {
            assert!(parse_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_resolve_against_maps() {
        let m = Maps::from_text(CANNED);
        let r = |s: &str| parse_addr(s).unwrap().resolve(Some(&m));
        assert_eq!(r("[heap]").unwrap(), 0x5555_d600_0000);
        assert_eq!(r("[heap]+0x100").unwrap(), 0x5555_d600_0100);
        assert_eq!(r("[stack]+16").unwrap(), 0x7ffd_0000_0010);
        assert_eq!(r("libc.so.6+0x1000").unwrap(), 0x7f20_0000_1000);
        assert_eq!(r("libc+0x28000").unwrap(), 0x7f20_0002_8000);
        assert_eq!(
            r("/usr/lib/x86_64-linux-gnu/libc.so.6").unwrap(),
            0x7f20_0000_0000
        );
        assert_eq!(r("ld-linux-x86-64.so.2+8").unwrap(), 0x7f40_0000_0008);
        assert_eq!(r("cat").unwrap(), 0x5555_d4a0_0000);
        assert_eq!(r("memfd:ring+4").unwrap(), 0x7f10_0000_0004);
        assert_eq!(r("[vdso]").unwrap(), 0x7ffd_0010_4000);
        assert_eq!(r("0x10").unwrap(), 0x10);
        assert!(r("[nosuch]").is_err());
        assert!(r("nosuch.so+1").is_err());
        assert!(r("0x10-0x20").is_err());
        let e = r("[heap]-0x5555d6000001").unwrap_err();
        assert!(e.0.contains("outside"), "{e}");
        // Numbers need no maps; names do.
        assert_eq!(parse_addr("4096").unwrap().resolve(None).unwrap(), 4096);
        assert!(parse_addr("[heap]").unwrap().resolve(None).is_err());
    }

    #[test]
    fn a_dash_in_a_file_name_is_not_an_offset() {
        let text = "7f0000000000-7f0000001000 r--p 00000000 fe:01 1 /opt/foo-1\n";
        let m = Maps::from_text(text);
        assert_eq!(
            parse_addr("foo-1").unwrap().resolve(Some(&m)).unwrap(),
            0x7f00_0000_0000
        );
    }

    #[test]
    fn ranges() {
        let m = Maps::from_text(CANNED);
        let r = |s: &str| parse_range(s).unwrap().resolve(Some(&m));
        assert_eq!(
            r("0x1000-0x2000").unwrap(),
            Range {
                start: 0x1000,
                end: 0x2000
            }
        );
        assert_eq!(
            r("0x1000..0x2000").unwrap(),
            Range {
                start: 0x1000,
                end: 0x2000
            }
        );
        assert_eq!(
            r("[heap]+0x10-[heap]+0x100").unwrap(),
            Range {
                start: 0x5555_d600_0010,
                end: 0x5555_d600_0100
            }
        );
        assert_eq!(
            r("[heap]").unwrap(),
            Range {
                start: 0x5555_d600_0000,
                end: 0x5555_d602_1000
            }
        );
        assert_eq!(
            r("libc.so.6").unwrap(),
            Range {
                start: 0x7f20_0000_0000,
                end: 0x7f20_001f_5000
            }
        );
        assert_eq!(
            r("ld-linux-x86-64.so.2").unwrap(),
            Range {
                start: 0x7f40_0000_0000,
                end: 0x7f40_0000_1000
            }
        );
        assert_eq!(r("[stack]-[stack]+0x1000").unwrap().len(), 0x1000);
        assert!(r("0x2000-0x1000").is_err());
        assert!(r("0x2000-0x2000").is_err());
        assert!(r("[nosuch]").is_err());
        for bad in ["", "0x1000", "12-", "0x1000-zz zz"] {
            assert!(
                parse_range(bad).and_then(|x| x.resolve(Some(&m))).is_err(),
                "{bad}"
            );
        }
        // Numeric ranges need no maps.
        let p = parse_range("0x1000-0x3000").unwrap();
        assert!(!p.needs_maps());
        assert_eq!(p.resolve(None).unwrap().len(), 0x2000);
    }

    #[test]
    fn hex_bytes() {
        assert_eq!(
            parse_hex_bytes("deadbeef").unwrap(),
            [0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(
            parse_hex_bytes("de ad\tBE ef").unwrap(),
            [0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(
            parse_hex_bytes("de:ad:be:ef").unwrap(),
            [0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(parse_hex_bytes("0x1234, 0x56").unwrap(), [0x12, 0x34, 0x56]);
        assert_eq!(parse_hex_bytes("00").unwrap(), [0]);
        for bad in ["", "  ", "f", "abc", "zz", "0x", "de ad b", "é1"] {
            assert!(parse_hex_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
