//! The one place secret values are taken out of text before any sink sees it.
//!
//! Every reporter receives events that went through [`Redactor::redact_event`] at the fan-out
//! point (`report/mod.rs`), so no sink can forget it.

use std::borrow::Cow;

/// What a secret value is replaced with.
pub const MASK: &str = "***";

/// Replaces known secret values with [`MASK`].
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Values, longest first, so a value containing another is masked whole.
    values: Vec<String>,
}

impl Redactor {
    /// A redactor for these values. Empty values are ignored (they would match everywhere).
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut values: Vec<String> = values
            .into_iter()
            .map(Into::into)
            .filter(|v| !v.is_empty())
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Redactor { values }
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every known secret value replaced by `***`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out: Cow<'a, str> = Cow::Borrowed(text);
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), MASK));
            }
        }
        out
    }

    /// Redacts a string in place.
    pub fn redact_in_place(&self, text: &mut String) {
        if let Cow::Owned(clean) = self.redact(text) {
            *text = clean;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence() {
        let r = Redactor::new(["s3cr3t"]);
        assert_eq!(r.redact("a s3cr3t b s3cr3t"), "a *** b ***");
    }

    #[test]
    fn longest_value_wins() {
        let r = Redactor::new(["abc", "abcdef"]);
        assert_eq!(r.redact("x abcdef y abc"), "x *** y ***");
    }

    #[test]
    fn empty_values_ignored_and_clean_text_borrowed() {
        let r = Redactor::new(["", "k"]);
        assert!(matches!(r.redact("none here"), Cow::Borrowed(_)));
        assert_eq!(r.redact("ok"), "o***");
    }

    proptest::proptest! {
        #[test]
        fn no_secret_survives(secret in "[a-zA-Z0-9]{4,12}", pre in ".{0,20}", post in ".{0,20}") {
            let r = Redactor::new([secret.clone()]);
            let text = format!("{pre}{secret}{post}");
            proptest::prop_assert!(!r.redact(&text).contains(&secret));
        }
    }
}
