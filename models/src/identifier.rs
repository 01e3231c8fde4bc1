//! Identifier normalisation: the one set of rules by which identity
//! resolution (engage-pipeline) keys identifiers and the server
//! (engage-serving) looks them up in a snapshot's identity map, so an email
//! or phone typed by an agent finds the customer the pipeline resolved.

/// An email, trimmed and lower-cased; `None` unless it has one `@` with text
/// on both sides.
pub fn normalize_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    (!local.is_empty() && !domain.is_empty() && !domain.contains('@')).then_some(e)
}

/// Checks a country calling code: 1 to 3 digits, not starting with 0.
pub fn check_country_code(code: &str) -> std::result::Result<(), String> {
    let ok = !code.is_empty()
        && code.len() <= 3
        && code.chars().all(|c| c.is_ascii_digit())
        && !code.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(format!("`{code}` is not a country calling code (1 to 3 digits, e.g. 1 or 44)"))
    }
}

/// A phone number in E.164 (`+<country><number>`). Formatting is dropped; a
/// leading `+` or `00` means the number has its country code; otherwise,
/// after dropping one leading trunk `0`, a number of 10 digits or fewer is
/// national and gets `country_code`, and a longer one already starting with
/// `country_code` keeps it. `None` for fewer than 7 or more than 15 digits.
pub fn normalize_phone(raw: &str, country_code: &str) -> Option<String> {
    let t = raw.trim();
    let digits: String = t.chars().filter(|c| c.is_ascii_digit()).collect();
    let (international, digits) = if t.starts_with('+') {
        (true, digits)
    } else if let Some(rest) = digits.strip_prefix("00") {
        (true, rest.to_string())
    } else {
        (false, digits)
    };
    let national = digits.strip_prefix('0').unwrap_or(&digits);
    let e164 = if international {
        digits
    } else if national.len() <= 10 {
        format!("{country_code}{national}")
    } else if digits.starts_with(country_code) {
        digits
    } else {
        return None;
    };
    (7..=15).contains(&e164.len()).then(|| format!("+{e164}"))
}

/// Any other identifier (customer, loyalty, cookie ids): trimmed; `None` if blank.
pub fn normalize_id(raw: &str) -> Option<String> {
    let t = raw.trim();
    (!t.is_empty()).then(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(normalize_email("  Ann.Lee@Example.COM "), Some("ann.lee@example.com".into()));
        assert_eq!(normalize_email("not-an-email"), None);
        assert_eq!(normalize_email("@example.com"), None);
        assert_eq!(normalize_email("a@b@c"), None);
    }

    #[test]
    fn phones_to_e164() {
        for raw in [
            "+1 555 000 0001",
            "(555) 000-0001",
            "555.000.0001",
            "1-555-000-0001",
            "15550000001",
            "001 555 000 0001",
        ] {
            assert_eq!(normalize_phone(raw, "1"), Some("+15550000001".into()), "{raw}");
        }
        assert_eq!(normalize_phone("020 7946 0018", "44"), Some("+442079460018".into()));
        assert_eq!(normalize_phone("+44 20 7946 0018", "1"), Some("+442079460018".into()));
        assert_eq!(normalize_phone("12345", "1"), None);
        assert_eq!(normalize_phone("call me", "1"), None);
    }

    #[test]
    fn ids() {
        assert_eq!(normalize_id("  L1 "), Some("L1".into()));
        assert_eq!(normalize_id("   "), None);
    }
}
