//! Rules: the raw TOML form ([`RawRule`], with spans) and the checked form ([`RuleSet`]).
//!
//! ```toml
//! [[rules]]
//! name = "kickoff"
//! on = "project_created"                      # or a list, or `time_entry_*`
//! when = "event.payload.active == true"       # optional, see the filter module
//!
//! [[rules.do]]
//! name = "add_lead"                           # optional; the default is derived from the target
//! action = "add-project-member"               # or `operation = "tasks.create"`, or `http = "URL"`
//! with = { workspace_id = "{{event.payload.workspace_id}}", project_id = "{{event.payload.id}}", user_id = 5000002 }
//! ```
//!
//! Every problem is reported with the line and column of the TOML value that causes it, all of
//! them at once, before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use toggl_connect_definition::{Connector, Operation};
use toggl_connect_store::NewJob;
use toml::Spanned;

use crate::filter::Filter;
use crate::template::{Template, check_path};

/// Job priority of rule steps: lower runs sooner, so actions go before polling work.
pub const ACTION_PRIORITY: i32 = 0;
/// The priority polling and catch-up jobs should use (after actions).
pub const POLL_PRIORITY: i32 = 100;

/// Triggers derived by the receiver on top of `<entity>_<action>`.
pub const DERIVED_TRIGGERS: [&str; 2] = ["time_entry_started", "time_entry_stopped"];

/// A problem in a rule, at a line and column of the config file (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleDiagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RuleDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// `on = "x"` or `on = ["x", "y"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawTriggers {
    /// One trigger.
    One(String),
    /// Several triggers: the rule runs once per event if any of them fires.
    Many(Vec<String>),
}

/// A rule as written in the config file. Embed it in a config struct as `rules: Vec<RawRule>`
/// and deserialize with `toml::from_str` so the spans are filled.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique rule name (shown in `runs list`).
    pub name: Spanned<String>,
    /// The trigger(s): `project_created`, `time_entry_stopped`, `time_entry_*`, ...
    pub on: Spanned<RawTriggers>,
    /// Optional filter over the event.
    #[serde(default)]
    pub when: Option<Spanned<String>>,
    /// The steps, in order.
    #[serde(rename = "do", default)]
    pub steps: Vec<Spanned<RawStep>>,
}

/// A step as written in the config file: exactly one of `action`, `operation`, `http`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Name for `{{steps.<name>...}}`; default: the action or operation name with `_`.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// A named action of the definition (`add-project-member`).
    #[serde(default)]
    pub action: Option<Spanned<String>>,
    /// Any operation of the definition (`tasks.create`).
    #[serde(default)]
    pub operation: Option<Spanned<String>>,
    /// POST the event to this URL.
    #[serde(default)]
    pub http: Option<Spanned<String>>,
    /// For `http`: the environment variable holding the HMAC-SHA256 signing secret.
    #[serde(default)]
    pub secret_env: Option<Spanned<String>>,
    /// Parameters (templates) for `action` / `operation`.
    #[serde(default)]
    pub with: BTreeMap<String, Spanned<toml::Value>>,
}

/// A checked step, in the form stored with every job of a run (so a run finishes with the steps
/// it started with, even if the config changes meanwhile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSpec {
    /// Step name.
    pub name: String,
    /// What it runs.
    #[serde(flatten)]
    pub target: StepTarget,
    /// Parameter templates (JSON form of the TOML values).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub with: Map<String, Value>,
}

/// What a step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepTarget {
    /// A named action of the definition.
    Action {
        /// Action name.
        action: String,
    },
    /// An operation of the definition.
    Operation {
        /// Resource name.
        resource: String,
        /// Operation name.
        operation: String,
    },
    /// POST the raw event, signed, to a URL.
    Http {
        /// Target URL.
        url: String,
        /// Environment variable with the signing secret (unsigned when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_env: Option<String>,
    },
}

impl StepTarget {
    /// Short text for listings: `action add-project-member`, `tasks.create`, `http POST`.
    pub fn describe(&self) -> String {
        match self {
            StepTarget::Action { action } => format!("action {action}"),
            StepTarget::Operation {
                resource,
                operation,
            } => format!("{resource}.{operation}"),
            StepTarget::Http { .. } => "http POST".to_owned(),
        }
    }
}

/// What every job of a run carries: the rule's steps as they were when the event was planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    /// The rule's steps.
    pub steps: Vec<StepSpec>,
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Rule name.
    pub name: String,
    /// Trigger patterns (exact names, or a prefix ending in `*`).
    pub triggers: Vec<String>,
    /// The filter text, if any.
    pub when: Option<String>,
    filter: Option<Filter>,
    /// Steps in order.
    pub steps: Vec<StepSpec>,
}

impl Rule {
    /// Whether the rule runs for an event firing `triggers` with this envelope.
    pub fn matches(&self, triggers: &[&str], context: &Value) -> bool {
        let fired = self
            .triggers
            .iter()
            .any(|p| triggers.iter().any(|t| trigger_matches(p, t)));
        fired && self.filter.as_ref().is_none_or(|f| f.matches(context))
    }
}

/// A checked rule set: every trigger, action, operation, parameter, template and filter is known
/// to be valid against the connector it was compiled with.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    secrets: Vec<(String, usize, usize)>,
}

/// Top-level shape of a rules file (other keys are ignored: they belong to the rest of the config).
#[derive(Debug, Deserialize)]
struct RulesDocument {
    #[serde(default)]
    rules: Vec<RawRule>,
}

/// A compact view of a rule for `rules check` and `serve` start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleSummary {
    /// Rule name.
    pub name: String,
    /// Trigger patterns.
    pub on: Vec<String>,
    /// Filter text.
    pub when: Option<String>,
    /// `name: target` per step.
    pub steps: Vec<String>,
}

impl RuleSet {
    /// Parses and checks the `[[rules]]` of a TOML document (other top-level keys are ignored).
    pub fn parse(source: &str, connector: &Connector) -> Result<RuleSet, Vec<RuleDiagnostic>> {
        let doc: RulesDocument =
            toml::from_str(source).map_err(|e| vec![toml_error(source, &e)])?;
        RuleSet::compile(doc.rules, connector, source)
    }

    /// Checks raw rules deserialized from `source` (needed to turn spans into lines and columns).
    pub fn compile(
        raw: Vec<RawRule>,
        connector: &Connector,
        source: &str,
    ) -> Result<RuleSet, Vec<RuleDiagnostic>> {
        let mut c = Compiler {
            source,
            connector,
            diags: Vec::new(),
            known: known_triggers(connector),
        };
        let mut rules = Vec::new();
        let mut secrets = Vec::new();
        let mut names = BTreeSet::new();
        for r in raw {
            let name = r.name.get_ref().trim().to_owned();
            if name.is_empty() {
                c.error(r.name.span(), "a rule needs a non-empty name".to_owned());
            } else if !names.insert(name.clone()) {
                c.error(
                    r.name.span(),
                    format!("rule `{name}` is defined twice; rule names must be unique"),
                );
            }
            if let Some(rule) = c.rule(&name, r, &mut secrets) {
                rules.push(rule);
            }
        }
        if c.diags.is_empty() {
            Ok(RuleSet { rules, secrets })
        } else {
            c.diags.sort_by_key(|d| (d.line, d.column));
            Err(c.diags)
        }
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// A rule by name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// One job per matching rule: its first step, carrying the rule's steps ([`RunPlan`]).
    ///
    /// Only step 0 is enqueued at event time; the worker enqueues step k+1 in the transaction
    /// that completes step k, so later steps can template over earlier results and a crash never
    /// loses or repeats a finished step.
    pub fn plan(&self, triggers: &[&str], envelope: &Value) -> Vec<NewJob> {
        let context = json!({ "event": envelope });
        self.rules
            .iter()
            .filter(|r| r.matches(triggers, &context))
            .filter_map(|r| {
                let first = r.steps.first()?;
                Some(NewJob {
                    rule: r.name.clone(),
                    step_index: 0,
                    step_name: first.name.clone(),
                    payload: run_payload(&r.steps),
                    not_before: None,
                    priority: ACTION_PRIORITY,
                })
            })
            .collect()
    }

    /// Secrets named by `secret_env` that `env` cannot provide (call with
    /// `|k| std::env::var(k).ok()`); `serve` should refuse to start when this is not empty.
    pub fn check_secrets(&self, env: impl Fn(&str) -> Option<String>) -> Vec<RuleDiagnostic> {
        self.secrets
            .iter()
            .filter(|(var, _, _)| env(var).is_none_or(|v| v.is_empty()))
            .map(|(var, line, column)| RuleDiagnostic {
                line: *line,
                column: *column,
                message: format!(
                    "environment variable {var} (the http step's signing secret) is not set"
                ),
            })
            .collect()
    }

    /// A compact view of every rule.
    pub fn summary(&self) -> Vec<RuleSummary> {
        self.rules
            .iter()
            .map(|r| RuleSummary {
                name: r.name.clone(),
                on: r.triggers.clone(),
                when: r.when.clone(),
                steps: r
                    .steps
                    .iter()
                    .map(|s| format!("{}: {}", s.name, s.target.describe()))
                    .collect(),
            })
            .collect()
    }
}

pub(crate) fn run_payload(steps: &[StepSpec]) -> Value {
    serde_json::to_value(RunPlan {
        steps: steps.to_vec(),
    })
    .expect("a run plan is plain JSON")
}

/// Whether trigger pattern `pattern` (exact, or a prefix ending in `*`) covers `trigger`.
pub fn trigger_matches(pattern: &str, trigger: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => trigger.starts_with(prefix),
        None => pattern == trigger,
    }
}

/// Every trigger the receiver can fire for this connector: `<entity>_<action>` of each routed
/// webhook event, plus the derived time entry triggers.
pub fn known_triggers(connector: &Connector) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = DERIVED_TRIGGERS.iter().map(|s| (*s).to_owned()).collect();
    for w in &connector.webhooks {
        if w.action == "*" {
            for a in ["created", "updated", "deleted"] {
                out.insert(format!("{}_{a}", w.entity));
            }
        } else {
            out.insert(format!("{}_{}", w.entity, w.action));
        }
    }
    out
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn toml_error(source: &str, e: &toml::de::Error) -> RuleDiagnostic {
    let (line, column) = e.span().map_or((1, 1), |s| line_col(source, s.start));
    RuleDiagnostic {
        line,
        column,
        message: e.message().trim().to_owned(),
    }
}

/// TOML to JSON: datetimes become their RFC 3339 text (what Toggl takes).
pub fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

fn is_step_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct Compiler<'a> {
    source: &'a str,
    connector: &'a Connector,
    diags: Vec<RuleDiagnostic>,
    known: BTreeSet<String>,
}

impl Compiler<'_> {
    fn at(&self, span: Range<usize>) -> (usize, usize) {
        line_col(self.source, span.start)
    }

    fn error(&mut self, span: Range<usize>, message: String) {
        let (line, column) = self.at(span);
        self.diags.push(RuleDiagnostic {
            line,
            column,
            message,
        });
    }

    /// The position of a character column inside a string value: exact for a one-line string
    /// without escapes, else the start of the value.
    fn inner_error(&mut self, span: Range<usize>, char_column: usize, message: String) {
        let raw = self.source.get(span.clone()).unwrap_or_default();
        let simple = (raw.starts_with('"') && !raw.starts_with("\"\"\"") && !raw.contains('\\'))
            || (raw.starts_with('\'') && !raw.starts_with("'''"));
        let (line, column) = self.at(span);
        let column = if simple && !raw.contains('\n') {
            column + char_column
        } else {
            column
        };
        self.diags.push(RuleDiagnostic {
            line,
            column,
            message,
        });
    }

    fn rule(
        &mut self,
        name: &str,
        r: RawRule,
        secrets: &mut Vec<(String, usize, usize)>,
    ) -> Option<Rule> {
        let before = self.diags.len();
        let triggers = match r.on.get_ref() {
            RawTriggers::One(t) => vec![t.clone()],
            RawTriggers::Many(ts) => ts.clone(),
        };
        if triggers.is_empty() {
            self.error(
                r.on.span(),
                format!("rule `{name}`: `on` needs at least one trigger"),
            );
        }
        for t in &triggers {
            let known = if let Some(prefix) = t.strip_suffix('*') {
                self.known.iter().any(|k| k.starts_with(prefix))
            } else {
                self.known.contains(t)
            };
            if !known {
                let list = self.known.iter().cloned().collect::<Vec<_>>().join(", ");
                self.error(
                    r.on.span(),
                    format!("rule `{name}`: unknown trigger `{t}`; known triggers: {list}"),
                );
            }
        }
        let mut filter = None;
        if let Some(when) = &r.when {
            match Filter::parse(when.get_ref()) {
                Ok(f) => {
                    for p in f.paths() {
                        if let Err(msg) = check_path(p, &[], false) {
                            self.error(when.span(), format!("rule `{name}`: filter: {msg}"));
                        }
                    }
                    filter = Some(f);
                }
                Err(e) => self.inner_error(
                    when.span(),
                    e.column,
                    format!("rule `{name}`: bad filter: {}", e.message),
                ),
            }
        }
        if r.steps.is_empty() {
            self.error(
                r.name.span(),
                format!("rule `{name}` has no steps; add at least one `[[rules.do]]`"),
            );
        }
        let mut steps: Vec<StepSpec> = Vec::new();
        for (i, step) in r.steps.iter().enumerate() {
            let earlier: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
            let earlier: Vec<String> = earlier.into_iter().map(str::to_owned).collect();
            if let Some(spec) = self.step(name, i, step, &earlier, secrets) {
                steps.push(spec);
            }
        }
        (self.diags.len() == before).then(|| Rule {
            name: name.to_owned(),
            triggers,
            when: r.when.as_ref().map(|w| w.get_ref().clone()),
            filter,
            steps,
        })
    }

    fn step(
        &mut self,
        rule: &str,
        index: usize,
        step: &Spanned<RawStep>,
        earlier: &[String],
        secrets: &mut Vec<(String, usize, usize)>,
    ) -> Option<StepSpec> {
        let span = step.span();
        let s = step.get_ref();
        let label = |n: &str| format!("rule `{rule}`, step {} (`{n}`)", index + 1);
        let given = [s.action.is_some(), s.operation.is_some(), s.http.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if given != 1 {
            self.error(
                span,
                format!(
                    "rule `{rule}`, step {}: give exactly one of `action`, `operation` or `http`",
                    index + 1
                ),
            );
            return None;
        }
        let (target, op): (
            StepTarget,
            Option<(&Operation, Option<&toggl_connect_definition::Action>)>,
        ) = if let Some(a) = &s.action {
            let Some(action) = self.connector.action(a.get_ref()) else {
                let list = self
                    .connector
                    .actions
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.error(
                    a.span(),
                    format!(
                        "rule `{rule}`, step {}: unknown action `{}`; known actions: {list}",
                        index + 1,
                        a.get_ref()
                    ),
                );
                return None;
            };
            let Some(op) = self.connector.action_operation(action) else {
                self.error(
                    a.span(),
                    format!("rule `{rule}`: action `{}` has no operation", a.get_ref()),
                );
                return None;
            };
            (
                StepTarget::Action {
                    action: action.name.clone(),
                },
                Some((op, Some(action))),
            )
        } else if let Some(o) = &s.operation {
            let text = o.get_ref();
            let found = text
                .split_once('.')
                .and_then(|(r, n)| self.connector.operation(r, n).map(|op| (r, n, op)));
            let Some((resource, operation, op)) = found else {
                let hint = if text.contains('.') {
                    "no such operation in the connector definition (`toggl-connect definition show` lists them)"
                } else {
                    "write `<resource>.<operation>`, e.g. `tasks.create`"
                };
                self.error(
                    o.span(),
                    format!(
                        "rule `{rule}`, step {}: unknown operation `{text}`: {hint}",
                        index + 1
                    ),
                );
                return None;
            };
            (
                StepTarget::Operation {
                    resource: resource.to_owned(),
                    operation: operation.to_owned(),
                },
                Some((op, None)),
            )
        } else {
            let url = s.http.as_ref().expect("counted above");
            let ok = reqwest::Url::parse(url.get_ref())
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                self.error(
                    url.span(),
                    format!(
                        "rule `{rule}`, step {}: `http` needs an absolute http(s) URL",
                        index + 1
                    ),
                );
            }
            if let Some(env) = &s.secret_env {
                let (line, column) = self.at(env.span());
                secrets.push((env.get_ref().clone(), line, column));
            }
            (
                StepTarget::Http {
                    url: url.get_ref().clone(),
                    secret_env: s.secret_env.as_ref().map(|e| e.get_ref().clone()),
                },
                None,
            )
        };
        if let (Some(env), Some(_)) = (&s.secret_env, op) {
            self.error(
                env.span(),
                format!(
                    "rule `{rule}`, step {}: `secret_env` only applies to `http` steps",
                    index + 1
                ),
            );
        }
        let name = match &s.name {
            Some(n) => {
                if !is_step_name(n.get_ref()) {
                    self.error(n.span(), format!("rule `{rule}`, step {}: step name `{}` must be letters, digits and `_` (it is used as `steps.<name>`)", index + 1, n.get_ref()));
                }
                n.get_ref().clone()
            }
            None => match &target {
                StepTarget::Action { action } => action.replace('-', "_"),
                StepTarget::Operation {
                    resource,
                    operation,
                } => format!("{resource}_{operation}"),
                StepTarget::Http { .. } => "http".to_owned(),
            },
        };
        if earlier.contains(&name) {
            let at = s.name.as_ref().map_or(span.clone(), Spanned::span);
            self.error(
                at,
                format!(
                    "{}: another step of this rule has the same name; give one a `name`",
                    label(&name)
                ),
            );
        }
        let earlier_refs: Vec<&str> = earlier.iter().map(String::as_str).collect();
        let mut with = Map::new();
        for (key, value) in &s.with {
            let json = toml_to_json(value.get_ref());
            match Template::parse(&json) {
                Ok(t) => {
                    for p in t.paths() {
                        if let Err(msg) = check_path(p, &earlier_refs, true) {
                            self.error(
                                value.span(),
                                format!("{}: parameter `{key}`: {msg}", label(&name)),
                            );
                        }
                    }
                    if let Some((op, _)) = op {
                        match op.param(key) {
                            None => {
                                let known = op
                                    .params
                                    .iter()
                                    .map(|p| p.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ");
                                self.error(
                                    value.span(),
                                    format!(
                                        "{}: unknown parameter `{key}`; known: {known}",
                                        label(&name)
                                    ),
                                );
                            }
                            Some(spec) => {
                                if let Some(lit) = t.as_literal() {
                                    if let Err(e) = spec.ty.coerce_value(key, lit) {
                                        self.error(value.span(), format!("{}: {e}", label(&name)));
                                    }
                                }
                            }
                        }
                    }
                }
                Err(e) => self.error(
                    value.span(),
                    format!("{}: parameter `{key}`: {e}", label(&name)),
                ),
            }
            with.insert(key.clone(), json);
        }
        if let (Some((op, action)), StepTarget::Action { .. } | StepTarget::Operation { .. }) =
            (op, &target)
        {
            let provided =
                |p: &str| with.contains_key(p) || action.is_some_and(|a| a.defaults.contains(p));
            let mut missing: Vec<String> = op
                .params
                .iter()
                .filter(|p| p.required && p.default.is_none() && !provided(&p.name))
                .map(|p| p.name.clone())
                .collect();
            if let Some(a) = action {
                for r in &a.required {
                    if !provided(r) && !missing.contains(r) {
                        missing.push(r.clone());
                    }
                }
            }
            if !missing.is_empty() {
                self.error(
                    span,
                    format!(
                        "{}: missing required parameter{} {} (add {} to `with`)",
                        label(&name),
                        if missing.len() == 1 { "" } else { "s" },
                        missing.join(", "),
                        if missing.len() == 1 { "it" } else { "them" }
                    ),
                );
            }
        } else if !s.with.is_empty() {
            self.error(
                span,
                format!(
                    "{}: `with` does not apply to `http` steps (they POST the event as received)",
                    label(&name)
                ),
            );
        }
        Some(StepSpec { name, target, with })
    }
}
