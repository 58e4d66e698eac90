//! The shipped example config compiles against the built-in connector and plans what it says.

use serde_json::json;
use toggl_connect_automation::{RuleSet, StepTarget};
use toggl_connect_definition::Connector;

const EXAMPLE: &str = include_str!("../../../examples/toggl-connect.toml");

fn rules() -> RuleSet {
    RuleSet::parse(EXAMPLE, Connector::builtin()).unwrap_or_else(|diags| {
        panic!(
            "example does not compile:\n{}",
            diags
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

#[test]
fn example_compiles_against_the_builtin_connector() {
    let rules = rules();
    let names: Vec<&str> = rules.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["project-kickoff", "tag-unassigned", "forward-to-billing"]
    );
    let kickoff = rules.rule("project-kickoff").expect("kickoff rule");
    assert_eq!(kickoff.steps.len(), 2);
    assert_eq!(
        kickoff.steps[1].target,
        StepTarget::Action {
            action: "create-task".into()
        }
    );
    let billing = rules.rule("forward-to-billing").expect("billing rule");
    assert!(
        matches!(&billing.steps[0].target, StepTarget::Http { secret_env: Some(v), .. } if v == "BILLING_WEBHOOK_SECRET")
    );
}

#[test]
fn example_plans_each_rule_for_its_events() {
    let rules = rules();
    let project = json!({"payload": {"id": 7, "workspace_id": 9, "name": "Apollo"}});
    let jobs = rules.plan(&["project_created"], &project);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].priority, toggl_connect_automation::ACTION_PRIORITY);
    let plan: toggl_connect_automation::RunPlan =
        serde_json::from_value(jobs[0].payload.clone()).expect("the job carries the run plan");
    assert_eq!(plan.steps.len(), 2);
    assert_eq!(
        (
            jobs[0].rule.as_str(),
            jobs[0].step_index,
            jobs[0].step_name.as_str()
        ),
        ("project-kickoff", 0, "add_lead")
    );

    let stopped_without_project = json!({"payload": {"id": 3, "workspace_id": 9, "project_id": null, "stop": "2025-01-10T10:00:00Z"}});
    let jobs = rules.plan(
        &["time_entry_updated", "time_entry_stopped"],
        &stopped_without_project,
    );
    let planned: Vec<&str> = jobs.iter().map(|j| j.rule.as_str()).collect();
    assert_eq!(
        planned,
        ["tag-unassigned", "forward-to-billing"],
        "one job per rule, even when two triggers fire"
    );

    let stopped_with_project = json!({"payload": {"id": 3, "workspace_id": 9, "project_id": 7}});
    let jobs = rules.plan(
        &["time_entry_updated", "time_entry_stopped"],
        &stopped_with_project,
    );
    let planned: Vec<&str> = jobs.iter().map(|j| j.rule.as_str()).collect();
    assert_eq!(planned, ["forward-to-billing"]);
}

#[test]
fn example_secret_must_be_set_for_serve() {
    let rules = rules();
    let missing = rules.check_secrets(|_| None);
    assert_eq!(missing.len(), 1);
    assert!(
        missing[0].message.contains("BILLING_WEBHOOK_SECRET"),
        "{}",
        missing[0]
    );
    assert!(rules.check_secrets(|_| Some("s3cret".into())).is_empty());
}

#[test]
fn raw_rules_embed_in_a_larger_config() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[allow(dead_code)]
        store: String,
        #[serde(default)]
        rules: Vec<toggl_connect_automation::RawRule>,
    }
    let text = format!("store = \"sqlite://x.db\"\n{EXAMPLE}");
    let config: Config = toml::from_str(&text).expect("config with rules parses");
    let rules = RuleSet::compile(config.rules, Connector::builtin(), &text).expect("compiles");
    assert_eq!(rules.rules().len(), 3);
}
