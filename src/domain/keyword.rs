//! Keyword kinds and the value rules WeChat applies to them (wechat-api.md §3).
//! Lengths count characters, not bytes.

use serde::Deserialize;
use unicode_segmentation::UnicodeSegmentation;

use super::Invalid;

/// A template keyword such as `thing1` or `character_string3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeywordName {
    name: String,
    kind: KeywordKind,
}

impl KeywordName {
    /// Parses a key: lowercase letters and `_`, then digits, as in `{{thing1.DATA}}`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let prefix = s.trim_end_matches(|c: char| c.is_ascii_digit());
        let digits = &s[prefix.len()..];
        let ok = !prefix.is_empty()
            && !digits.is_empty()
            && prefix.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        if !ok {
            return Err(Invalid(format!(
                "{s:?} is not a template keyword; keys look like thing1 or time2 (the name inside {{{{...DATA}}}} in the template)"
            )));
        }
        Ok(Self {
            name: s.to_owned(),
            kind: KeywordKind::from_prefix(prefix),
        })
    }

    /// The keyword's value type, from its prefix.
    pub fn kind(&self) -> KeywordKind {
        self.kind
    }
}

impl AsRef<str> for KeywordName {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for KeywordName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// The value type of a keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeywordKind {
    /// `thing`: at most 20 characters of anything.
    Thing,
    /// `number`: at most 32 digits, a decimal point allowed.
    Number,
    /// `letter`: at most 32 letters.
    Letter,
    /// `symbol`: at most 5 symbols.
    Symbol,
    /// `character_string`: at most 32 digits, letters and symbols, no Chinese.
    CharacterString,
    /// `time`: a 24-hour time, optionally with a date, or a `~` range.
    Time,
    /// `date`: a date, optionally with a time, or a `~` range.
    Date,
    /// `amount`: a currency symbol and at most 10 digits, optionally ending in 元.
    Amount,
    /// `phone_number`: at most 17 digits and symbols.
    PhoneNumber,
    /// `car_number`: at most 8 characters; only the first and last may be Chinese.
    CarNumber,
    /// `name`: at most 10 Chinese characters, or 20 letters and symbols.
    Name,
    /// `phrase`: at most 5 Chinese characters.
    Phrase,
    /// Kinds whose rules are not documented (`enum`, `short_thing`, `const` ...):
    /// only checked for being non-empty, WeChat's 47003 reports the rest.
    Other,
}

impl KeywordKind {
    fn from_prefix(p: &str) -> Self {
        match p {
            "thing" => Self::Thing,
            "number" => Self::Number,
            "letter" => Self::Letter,
            "symbol" => Self::Symbol,
            "character_string" => Self::CharacterString,
            "time" => Self::Time,
            "date" => Self::Date,
            "amount" => Self::Amount,
            "phone_number" => Self::PhoneNumber,
            "car_number" => Self::CarNumber,
            "name" => Self::Name,
            "phrase" => Self::Phrase,
            _ => Self::Other,
        }
    }
}

/// What a too-long `thing` or `name` value gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// Refuse the message (no API call).
    #[default]
    Fail,
    /// Cut the value to the limit, ending in `…`.
    Truncate,
}

/// A value that breaks its keyword's rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{keyword}: {reason}")]
pub struct KeywordError {
    /// The keyword at fault.
    pub keyword: String,
    /// What is wrong with its value.
    pub reason: String,
}

fn is_chinese(c: char) -> bool {
    matches!(c,
        '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{2A6DF}' | '\u{2A700}'..='\u{2EBEF}' | '\u{3007}')
}

fn is_symbol(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control() && !is_chinese(c)
}

/// Checks `value` against the rules of `key`'s kind; may shorten it when `overflow` says so.
pub(crate) fn check(
    key: &KeywordName,
    value: &str,
    overflow: Overflow,
) -> Result<String, KeywordError> {
    let fail = |reason: String| KeywordError {
        keyword: key.name.clone(),
        reason,
    };
    if value.trim().is_empty() {
        return Err(fail("value is empty (WeChat answers 47003)".into()));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(fail(format!("value contains the control character {c:?}")));
    }
    let n = value.chars().count();
    let too_long = |limit: usize, what: &str| {
        fail(format!(
            "{value:?} has {n} characters; {what} allows at most {limit}"
        ))
    };
    let kind = key.kind;
    match kind {
        KeywordKind::Thing => fit(value, 20, overflow).ok_or_else(|| too_long(20, "thing")),
        KeywordKind::Name => {
            let limit = if value.chars().any(is_chinese) {
                10
            } else {
                20
            };
            if value.chars().any(|c| c.is_ascii_digit()) {
                return Err(fail(format!("{value:?}: a name has no digits")));
            }
            fit(value, limit, overflow).ok_or_else(|| too_long(limit, "name"))
        }
        KeywordKind::Number => {
            let digits = value.chars().filter(char::is_ascii_digit).count();
            let shape = value.split('.').count() <= 2
                && !value.starts_with('.')
                && !value.ends_with('.')
                && value.chars().all(|c| c.is_ascii_digit() || c == '.');
            if !shape {
                return Err(fail(format!(
                    "{value:?} is not a number (digits and one decimal point)"
                )));
            }
            if digits > 32 {
                return Err(too_long(32, "number"));
            }
            Ok(value.to_owned())
        }
        KeywordKind::Letter => {
            if !value.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(fail(format!("{value:?}: letter allows only letters")));
            }
            if n > 32 {
                return Err(too_long(32, "letter"));
            }
            Ok(value.to_owned())
        }
        KeywordKind::Symbol => {
            if !value.chars().all(is_symbol) {
                return Err(fail(format!("{value:?}: symbol allows only symbols")));
            }
            if n > 5 {
                return Err(too_long(5, "symbol"));
            }
            Ok(value.to_owned())
        }
        KeywordKind::CharacterString => {
            if let Some(c) = value.chars().find(|c| !c.is_ascii() || *c == ' ') {
                return Err(fail(format!(
                    "{value:?} contains {c:?}; character_string allows only digits, letters and symbols"
                )));
            }
            if n > 32 {
                return Err(too_long(32, "character_string"));
            }
            Ok(value.to_owned())
        }
        KeywordKind::Time | KeywordKind::Date => {
            check_time_or_date(value, kind == KeywordKind::Time).map_err(fail)?;
            Ok(value.to_owned())
        }
        KeywordKind::Amount => {
            check_amount(value).map_err(fail)?;
            Ok(value.to_owned())
        }
        KeywordKind::PhoneNumber => {
            if let Some(c) = value
                .chars()
                .find(|c| !(c.is_ascii_digit() || is_symbol(*c)))
            {
                return Err(fail(format!(
                    "{value:?} contains {c:?}; phone_number allows digits and symbols"
                )));
            }
            if n > 17 {
                return Err(too_long(17, "phone_number"));
            }
            Ok(value.to_owned())
        }
        KeywordKind::CarNumber => {
            if n > 8 {
                return Err(too_long(8, "car_number"));
            }
            let last = n - 1;
            for (i, c) in value.chars().enumerate() {
                let ok = c.is_ascii_alphanumeric() || ((i == 0 || i == last) && is_chinese(c));
                if !ok {
                    return Err(fail(format!(
                        "{value:?}: car_number allows letters and digits, and Chinese only first or last"
                    )));
                }
            }
            Ok(value.to_owned())
        }
        KeywordKind::Phrase => {
            if !value.chars().all(is_chinese) {
                return Err(fail(format!(
                    "{value:?}: phrase allows only Chinese characters"
                )));
            }
            if n > 5 {
                return Err(too_long(5, "phrase"));
            }
            Ok(value.to_owned())
        }
        KeywordKind::Other => Ok(value.to_owned()),
    }
}

/// Returns the value if it fits, or its truncation ending in `…` when allowed.
/// Cuts on grapheme boundaries so that no character is split.
fn fit(value: &str, limit: usize, overflow: Overflow) -> Option<String> {
    if value.chars().count() <= limit {
        return Some(value.to_owned());
    }
    if overflow == Overflow::Fail {
        return None;
    }
    let mut out = String::new();
    let mut used = 0;
    for g in value.graphemes(true) {
        let len = g.chars().count();
        if used + len > limit - 1 {
            break;
        }
        out.push_str(g);
        used += len;
    }
    out.push('…');
    Some(out)
}

fn check_time_or_date(value: &str, time_required: bool) -> Result<(), String> {
    if value.contains('～') {
        return Err(format!(
            "{value:?} uses the full-width ～; a range needs the ASCII ~"
        ));
    }
    let parts: Vec<&str> = value.split('~').collect();
    if parts.len() > 2 {
        return Err(format!("{value:?} has more than one ~"));
    }
    for (i, part) in parts.iter().enumerate() {
        let part = part.trim();
        let (date, time) = split_date_time(part).ok_or_else(|| {
            format!("{part:?} is not a date or 24-hour time (e.g. 2019年10月1日 15:01)")
        })?;
        if time_required && time.is_none() {
            return Err(format!(
                "{part:?} has no time of day; time needs e.g. 15:01"
            ));
        }
        // The end of a date range may be a bare time: 2019年10月1日 15:01~16:00.
        if !time_required && date.is_none() && i == 0 {
            return Err(format!(
                "{part:?} has no date; date needs e.g. 2019年10月1日"
            ));
        }
    }
    Ok(())
}

/// Splits `part` into a date and a time, each checked; `None` when neither parses.
fn split_date_time(part: &str) -> Option<(Option<()>, Option<()>)> {
    let (d, t) = match part.rsplit_once(' ') {
        Some((d, t)) => (Some(d.trim()), Some(t)),
        None if is_time(part) => (None, Some(part)),
        None => (Some(part), None),
    };
    let date = match d {
        Some(d) if is_date(d) => Some(()),
        Some(_) => return None,
        None => None,
    };
    let time = match t {
        Some(t) if is_time(t) => Some(()),
        Some(_) => return None,
        None => None,
    };
    Some((date, time))
}

fn is_time(s: &str) -> bool {
    let f: Vec<&str> = s.split(':').collect();
    let num = |x: &str, max: u32| {
        (1..=2).contains(&x.len())
            && x.chars().all(|c| c.is_ascii_digit())
            && x.parse::<u32>().is_ok_and(|v| v <= max)
    };
    matches!(f.len(), 2 | 3) && num(f[0], 23) && f[1..].iter().all(|x| x.len() == 2 && num(x, 59))
}

fn is_date(s: &str) -> bool {
    let nums: Vec<&str> = if let Some(rest) = s.strip_suffix('日') {
        rest.split(['年', '月']).collect()
    } else {
        s.split(['-', '/', '.']).collect()
    };
    if nums.len() != 3
        || nums
            .iter()
            .any(|x| x.is_empty() || !x.chars().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    let (y, m, d) = (nums[0], nums[1].parse::<u32>(), nums[2].parse::<u32>());
    y.len() == 4 && matches!(m, Ok(1..=12)) && matches!(d, Ok(1..=31))
}

fn check_amount(value: &str) -> Result<(), String> {
    let bad = || format!("{value:?} is not an amount (e.g. ¥99.00 or 99.00元)");
    let body = value.strip_suffix('元').unwrap_or(value);
    let body = body
        .strip_prefix(['¥', '￥', '$', '€', '£'])
        .unwrap_or(body);
    let (int, frac) = body.split_once('.').unwrap_or((body, "0"));
    let digits_only = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if !digits_only(int) || !digits_only(frac) {
        return Err(bad());
    }
    if int.len() + if body.contains('.') { frac.len() } else { 0 } > 10 {
        return Err(format!("{value:?} has more than 10 digits"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(key: &str, value: &str) -> bool {
        check(&KeywordName::parse(key).unwrap(), value, Overflow::Fail).is_ok()
    }

    #[test]
    fn keys_must_look_like_template_placeholders() {
        for bad in [
            "thing",
            "1",
            "Thing1",
            "thing1\t",
            "thing 1",
            "thing1.DATA",
            "",
        ] {
            assert!(KeywordName::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            KeywordName::parse("character_string12").unwrap().kind(),
            KeywordKind::CharacterString
        );
        assert_eq!(
            KeywordName::parse("short_thing1").unwrap().kind(),
            KeywordKind::Other
        );
    }

    #[test]
    fn each_kind_accepts_its_documented_examples() {
        let good = [
            ("thing1", "会议室A，下午三点开会"),
            ("number1", "123.45"),
            ("letter1", "abcXYZ"),
            ("symbol1", "%$#"),
            ("character_string1", "ORDER-2024_01#9"),
            ("time1", "15:01"),
            ("time1", "2019年10月1日 15:01"),
            ("time1", "2023-03-24 11:50"),
            ("time1", "15:01~16:00"),
            ("date1", "2019年10月1日"),
            ("date1", "2019年10月1日 15:01"),
            ("date1", "2019-10-01~2019-10-07"),
            ("amount1", "¥99.00"),
            ("amount1", "99.5元"),
            ("phone_number1", "+86-0766-66888866"),
            ("car_number1", "粤A8Z888挂"),
            ("name1", "张三"),
            ("name1", "John Smith"),
            ("phrase1", "配送中"),
            ("enum_string1", "anything"),
        ];
        for (k, v) in good {
            assert!(ok(k, v), "{k} should accept {v:?}");
        }
    }

    #[test]
    fn each_kind_rejects_what_wechat_answers_47003_for() {
        let bad = [
            ("thing1", ""),
            ("thing1", "   "),
            ("thing1", "一二三四五六七八九十一二三四五六七八九十一"),
            ("thing1", "line\nbreak"),
            ("number1", "12a"),
            ("number1", "1.2.3"),
            ("number1", &"1".repeat(33)),
            ("letter1", "abc1"),
            ("symbol1", "abc"),
            ("symbol1", "%%%%%%"),
            ("character_string1", "订单123"),
            ("character_string1", &"a".repeat(33)),
            ("time1", "2019年10月1日"),
            ("time1", "15:01～16:00"),
            ("time1", "25:00"),
            ("time1", "tomorrow"),
            ("date1", "15:01"),
            ("date1", "2019-13-01"),
            ("amount1", "99 dollars"),
            ("amount1", "¥12345678901"),
            ("phone_number1", "call me"),
            ("phone_number1", &"1".repeat(18)),
            ("car_number1", "粤A8Z888挂12"),
            ("car_number1", "A粤8Z888"),
            ("name1", "张三李四王五赵六钱七孙"),
            ("name1", "R2D2"),
            ("phrase1", "配送中ok"),
            ("phrase1", "一二三四五六"),
            ("const1", ""),
        ];
        for (k, v) in bad {
            assert!(!ok(k, v), "{k} should reject {v:?}");
        }
    }

    #[test]
    fn truncation_counts_characters_and_ends_in_an_ellipsis() {
        let key = KeywordName::parse("thing2").unwrap();
        let long = "这是一个非常非常非常非常非常非常长的会议名称啊";
        let out = check(&key, long, Overflow::Truncate).unwrap();
        assert_eq!(out.chars().count(), 20);
        assert!(out.ends_with('…'));
        assert!(long.starts_with(out.trim_end_matches('…')));
        assert!(check(&key, long, Overflow::Fail).is_err());
    }

    #[test]
    fn truncation_never_splits_a_grapheme() {
        let key = KeywordName::parse("thing1").unwrap();
        // 18 letters then an e + combining accent straddling the cut.
        let v = format!("{}e\u{301}xyz", "a".repeat(18));
        let out = check(&key, &v, Overflow::Truncate).unwrap();
        assert_eq!(out, format!("{}…", "a".repeat(18)));
    }
}
