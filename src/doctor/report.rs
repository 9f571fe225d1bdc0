//! The doctor's verdicts: one [`Check`] per line with its [`Status`] and fix, grouped per
//! connection into a [`Report`], rendered for a terminal or as JSON.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Error,
    /// Not run: not asked for, or a check it depends on failed.
    Skipped,
}

impl Status {
    pub(super) fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Error => "error",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub message: String,
    pub fix: Option<String>,
}

impl Check {
    pub(super) fn ok(name: &'static str, message: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            message: message.into(),
            fix: None,
        }
    }
    pub(super) fn skipped(name: &'static str, message: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Skipped,
            message: message.into(),
            fix: None,
        }
    }
    pub(super) fn warning(
        name: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name,
            status: Status::Warning,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
    pub(super) fn error(
        name: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name,
            status: Status::Error,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionReport {
    pub id: String,
    pub name: String,
    pub checks: Vec<Check>,
}

impl ConnectionReport {
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub connections: Vec<ConnectionReport>,
}

impl Report {
    /// True when no check is an error. Warnings and skipped checks pass: "could not verify"
    /// or "expires in 20 days" must not fail a deployment pipeline.
    pub fn passed(&self) -> bool {
        self.count(Status::Error) == 0
    }

    pub(super) fn count(&self, status: Status) -> usize {
        self.connections
            .iter()
            .flat_map(|c| &c.checks)
            .filter(|c| c.status == status)
            .count()
    }

    /// `{"passed": bool, "connections": [{"id", "name", "checks": [{"name", "status",
    /// "message", "fix"}]}]}`, pretty-printed, members in that order.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            passed: bool,
            connections: &'a [ConnectionReport],
        }
        serde_json::to_string_pretty(&Json {
            passed: self.passed(),
            connections: &self.connections,
        })
    }

    /// One line per check, the fix indented under each warning and error, then a summary.
    pub fn render(&self) -> String {
        const STATUS_WIDTH: usize = 8;
        const NAME_WIDTH: usize = 14;
        let mut out = String::new();
        for conn in &self.connections {
            if conn.name == conn.id {
                out.push_str(&format!("{}\n", conn.id));
            } else {
                out.push_str(&format!("{} ({})\n", conn.id, conn.name));
            }
            for check in &conn.checks {
                out.push_str(&format!(
                    "  {:STATUS_WIDTH$}{:NAME_WIDTH$}{}\n",
                    check.status.label(),
                    check.name,
                    check.message
                ));
                if let Some(fix) = &check.fix {
                    out.push_str(&format!(
                        "  {:w$}fix: {fix}\n",
                        "",
                        w = STATUS_WIDTH + NAME_WIDTH
                    ));
                }
            }
            out.push('\n');
        }
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        out.push_str(&format!(
            "{} checked: {}, {}{}\n",
            plural(self.connections.len(), "connection"),
            plural(self.count(Status::Error), "error"),
            plural(self.count(Status::Warning), "warning"),
            if self.passed() { "" } else { " — not ready" },
        ));
        out
    }
}

/// `--connection ID` names no configured connection.
#[derive(Debug, thiserror::Error)]
#[error("no connection has the id {id:?}; the configured ids are: {}", .known.join(", "))]
pub struct UnknownConnection {
    pub id: String,
    pub known: Vec<String>,
}
