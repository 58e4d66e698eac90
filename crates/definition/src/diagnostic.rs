//! Problems found while compiling a definition, each tied to a JSON path.

use std::fmt;

use serde::Serialize;

/// How bad a problem is.
///
/// An `Error` stops the definition from compiling; a `Warning` is reported but the definition
/// still loads (that is how the seed's Toggl-specific defects are reported: users' files must
/// keep working while they are told what is wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The definition cannot be used.
    Error,
    /// The definition loads, but something is wrong or will fail against the real API.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warning => "warning",
        })
    }
}

/// One problem in a definition.
///
/// `path` is a JSON path in the combined form `{"service": <service file>, "resources": [...]}`,
/// for example `resources[2].operations.create.bodyTemplate.value`; `code` is stable and meant for
/// tooling and documentation (`doubled-prefix`, `unknown-placeholder`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Stable kebab-case identifier of the kind of problem.
    pub code: &'static str,
    /// Where the problem is, as a JSON path.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// One line saying how to fix it.
    pub fix: String,
}

impl Diagnostic {
    /// A diagnostic with error severity.
    pub fn error(
        code: &'static str,
        path: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Error,
            code,
            path: path.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// A diagnostic with warning severity.
    pub fn warning(
        code: &'static str,
        path: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            code,
            path: path.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// Whether this diagnostic stops the definition from compiling.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Human format: `warning[doubled-prefix]: resources[0].endpoint.value: message` and an indented
/// `fix:` line.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}]: {}: {}\n  fix: {}",
            self.severity, self.code, self.path, self.message, self.fix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_human_readable() {
        let d = Diagnostic::warning(
            "doubled-prefix",
            "resources[0].endpoint.value",
            "doubled",
            "drop it",
        );
        assert_eq!(
            d.to_string(),
            "warning[doubled-prefix]: resources[0].endpoint.value: doubled\n  fix: drop it"
        );
        let json = serde_json::to_value(&d).expect("serializable");
        assert_eq!(json["severity"], "warning");
        assert_eq!(json["code"], "doubled-prefix");
    }
}
