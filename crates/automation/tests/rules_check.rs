//! `rules check`: every problem, with the line and column of the value that causes it.

use toggl_connect_automation::{RuleDiagnostic, RuleSet};
use toggl_connect_definition::Connector;

fn diagnostics(source: &str) -> Vec<String> {
    match RuleSet::parse(source, Connector::builtin()) {
        Ok(_) => Vec::new(),
        Err(diags) => diags.iter().map(RuleDiagnostic::to_string).collect(),
    }
}

#[test]
fn every_problem_is_reported_with_line_and_column() {
    let source = r#"
[[rules]]
name = "kickoff"
on = "project_creatd"
when = "event.payload.active = true"

[[rules.do]]
action = "add-project-membr"

[[rules.do]]
name = "create_task"
operation = "tasks.create"
with = { workspace_id = "{{event.payload.workspace_id}}", name = "Kickoff for {{evnt.payload.name}}" }

[[rules.do]]
operation = "tasks.update"
with = { workspace_id = "{{event.payload.workspace_id}}", project_id = "{{steps.later.project_id}}", id = "{{steps.create_task.id}}", colour = "red" }

[[rules.do]]
name = "later"
operation = "tags.create"
with = { workspace_id = "{{ event.payload.workspace_id", name = "x" }
"#;
    insta::assert_snapshot!(diagnostics(source).join("\n"), @r#"
    4:6: rule `kickoff`: unknown trigger `project_creatd`; known triggers: client_created, client_deleted, client_updated, project_created, project_deleted, project_updated, project_user_created, project_user_deleted, project_user_updated, tag_created, tag_deleted, tag_updated, task_created, task_deleted, task_updated, time_entry_created, time_entry_deleted, time_entry_started, time_entry_stopped, time_entry_updated, workspace_created, workspace_deleted, workspace_updated, workspace_user_created, workspace_user_deleted, workspace_user_updated
    5:30: rule `kickoff`: bad filter: use `==` to compare
    8:10: rule `kickoff`, step 1: unknown action `add-project-membr`; known actions: create-client, create-user-invitation, add-project-member, create-task, create-project, create-tag, create-time-entry, start-timer, stop-timer
    10:1: rule `kickoff`, step 2 (`create_task`): missing required parameter project_id (add it to `with`)
    13:66: rule `kickoff`, step 2 (`create_task`): parameter `name`: `evnt.payload.name`: unknown root `evnt`; templates read `event` (the Toggl event) or `steps.<name>` (an earlier step's result)
    17:72: rule `kickoff`, step 3 (`tasks_update`): parameter `project_id`: `steps.later.project_id` refers to step `later`, which is not an earlier step of this rule (earlier: create_task)
    17:144: rule `kickoff`, step 3 (`tasks_update`): unknown parameter `colour`; known: workspace_id, project_id, id, name, active, estimated_seconds, user_id
    22:25: rule `kickoff`, step 4 (`later`): parameter `workspace_id`: unclosed `{{` in "{{ event.payload.workspace_id"
    "#);
}

#[test]
fn syntax_and_shape_errors_point_into_the_file() {
    assert_eq!(
        diagnostics("[[rules]]\nname = \"a\"\non = \"project_created\"\nthen = 1\n"),
        ["4:1: unknown field `then`, expected one of `name`, `on`, `when`, `do`"]
    );
    assert_eq!(
        diagnostics(
            "[[rules]]\nname = \"a\"\non = \"project_created\"\n[[rules.do]]\naction = \"create-tag\"\nhttp = \"http://x\"\n"
        ),
        ["4:1: rule `a`, step 1: give exactly one of `action`, `operation` or `http`"]
    );
    assert_eq!(
        diagnostics("[[rules]]\nname = \"a\"\non = \"project_created\"\n"),
        ["2:8: rule `a` has no steps; add at least one `[[rules.do]]`"]
    );
    assert_eq!(
        diagnostics(
            "[[rules]]\nname = \"a\"\non = \"project_created\"\nwhen = \"steps.x.id == 1\"\n[[rules.do]]\naction = \"create-tag\"\nwith = { workspace_id = \"{{event.payload.workspace_id}}\", name = 5 }\n"
        ),
        [
            "4:8: rule `a`: filter: `steps.x.id`: a filter runs before any step, so it can only read `event`"
        ]
    );
}

#[test]
fn literal_parameters_are_type_checked_and_names_unique() {
    let source = "[[rules]]\nname = \"a\"\non = [\"time_entry_*\"]\n[[rules.do]]\noperation = \"time_entries.update\"\nwith = { workspace_id = \"nine\", id = \"{{event.payload.id}}\" }\n[[rules]]\nname = \"a\"\non = \"bogus_*\"\n[[rules.do]]\nhttp = \"ftp://x\"\n";
    insta::assert_snapshot!(diagnostics(source).join("\n"), @r#"
    6:25: rule `a`, step 1 (`time_entries_update`): parameter workspace_id: expected an integer, got "nine"
    8:8: rule `a` is defined twice; rule names must be unique
    9:6: rule `a`: unknown trigger `bogus_*`; known triggers: client_created, client_deleted, client_updated, project_created, project_deleted, project_updated, project_user_created, project_user_deleted, project_user_updated, tag_created, tag_deleted, tag_updated, task_created, task_deleted, task_updated, time_entry_created, time_entry_deleted, time_entry_started, time_entry_stopped, time_entry_updated, workspace_created, workspace_deleted, workspace_updated, workspace_user_created, workspace_user_deleted, workspace_user_updated
    11:8: rule `a`, step 1: `http` needs an absolute http(s) URL
    "#);
}

#[test]
fn a_valid_rule_set_compiles() {
    let source = "title = \"other config keys are ignored\"\n[[rules]]\nname = \"a\"\non = \"project_created\"\n[[rules.do]]\nname = \"t\"\naction = \"create-task\"\nwith = { workspace_id = \"{{event.payload.workspace_id}}\", project_id = \"{{event.payload.id}}\", name = \"Kickoff\" }\n[[rules.do]]\noperation = \"tasks.update\"\nwith = { workspace_id = \"{{event.payload.workspace_id}}\", project_id = \"{{event.payload.id}}\", id = \"{{steps.t.id}}\", active = false }\n";
    assert_eq!(diagnostics(source), Vec::<String>::new());
}
