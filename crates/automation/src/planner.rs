//! The receiver's [`JobPlanner`] for rules: a stored event's triggers become rule jobs, enqueued
//! in the event's own transaction (so an acknowledged event never loses its jobs).

use std::sync::Arc;

use serde_json::Value;
use toggl_connect_store::NewJob;
use toggl_connect_triggers::classify::Classification;
use toggl_connect_triggers::envelope::Event;
use toggl_connect_triggers::receiver::JobPlanner;

use crate::RuleSet;

/// Plans the jobs of every rule whose trigger the event fires (see [`RuleSet::plan`]).
pub struct RulesPlanner(pub Arc<RuleSet>);

impl JobPlanner for RulesPlanner {
    fn plan(
        &self,
        _event: &Event,
        classification: &Classification,
        envelope: &Value,
    ) -> Vec<NewJob> {
        let triggers: Vec<&str> = classification.all().collect();
        self.0.plan(&triggers, envelope)
    }
}
