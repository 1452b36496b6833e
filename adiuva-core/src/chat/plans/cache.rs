//! An LRU of built plans (plan step 5: `maxsize=1000`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use super::{LLM_ACTION, PlanError, PromptTemplateRegistry, normalise_message, plan_for_agent};
use crate::chat::types::ExecutionPlan;

/// How many plans a [`PlanCache::new`] keeps.
pub const PLAN_CACHE_CAPACITY: usize = 1000;

const NIL: usize = usize::MAX;

struct Node {
    key: String,
    plan: ExecutionPlan,
    prev: usize,
    next: usize,
}

/// A slab of nodes threaded on a doubly linked list (head = most recent), indexed by a
/// map: every operation is O(1). Evicted slots are reused, so the slab never grows past
/// the capacity.
struct Lru {
    capacity: usize,
    map: HashMap<String, usize>,
    nodes: Vec<Node>,
    head: usize,
    tail: usize,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            map: HashMap::new(),
            nodes: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.nodes[i].prev, self.nodes[i].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next].prev = prev;
        }
    }

    fn push_front(&mut self, i: usize) {
        self.nodes[i].prev = NIL;
        self.nodes[i].next = self.head;
        if self.head != NIL {
            self.nodes[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn get(&mut self, key: &str) -> Option<&ExecutionPlan> {
        let i = *self.map.get(key)?;
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
        Some(&self.nodes[i].plan)
    }

    fn put(&mut self, key: String, plan: ExecutionPlan) {
        if self.capacity == 0 {
            return;
        }
        if let Some(&i) = self.map.get(&key) {
            self.nodes[i].plan = plan;
            if self.head != i {
                self.unlink(i);
                self.push_front(i);
            }
            return;
        }
        let i = if self.nodes.len() < self.capacity {
            self.nodes.push(Node {
                key: key.clone(),
                plan,
                prev: NIL,
                next: NIL,
            });
            self.nodes.len() - 1
        } else {
            // Full: reuse the least recently used slot.
            let i = self.tail;
            self.unlink(i);
            let old = std::mem::replace(&mut self.nodes[i].key, key.clone());
            self.map.remove(&old);
            self.nodes[i].plan = plan;
            i
        };
        self.map.insert(key, i);
        self.push_front(i);
    }

    fn keys_by_recency(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.map.len());
        let mut i = self.head;
        while i != NIL {
            out.push(self.nodes[i].key.clone());
            i = self.nodes[i].next;
        }
        out
    }
}

/// Built plans by key, at most `capacity` of them; storing one more evicts the least
/// recently used (a [`get_plan`](Self::get_plan) counts as a use). Safe to share
/// between requests: every method takes `&self`.
pub struct PlanCache {
    inner: Mutex<Lru>,
}

impl std::fmt::Debug for PlanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lru = self.lock();
        f.debug_struct("PlanCache")
            .field("len", &lru.map.len())
            .field("capacity", &lru.capacity)
            .finish()
    }
}

impl Default for PlanCache {
    fn default() -> Self {
        Self::new()
    }
}

impl PlanCache {
    /// A cache of [`PLAN_CACHE_CAPACITY`] plans.
    pub fn new() -> Self {
        Self::with_capacity(PLAN_CACHE_CAPACITY)
    }

    /// A cache of `capacity` plans (0 caches nothing).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Lru::new(capacity)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        // Every mutation leaves the list consistent before it can panic, so a poisoned
        // lock still guards a usable cache.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores `plan` under `key` (replacing any plan there) as the most recent entry.
    pub fn cache_plan(&self, key: impl Into<String>, plan: ExecutionPlan) {
        self.lock().put(key.into(), plan);
    }

    /// The plan under `key`, which becomes the most recent entry.
    pub fn get_plan(&self, key: &str) -> Option<ExecutionPlan> {
        self.lock().get(key).cloned()
    }

    /// How many plans are cached.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most plans kept.
    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// The keys, most recently used first.
    pub fn keys_by_recency(&self) -> Vec<String> {
        self.lock().keys_by_recency()
    }

    /// [`plan_for_agent`], cached by `(agent, normalised message)`. A hit returns the
    /// cached plan with this request's own wording in the `message` variable, so two
    /// messages differing only in case or spacing share an entry but each client gets
    /// back its user's text.
    pub fn plan_for_agent(
        &self,
        agent: &str,
        message: &str,
        templates: &PromptTemplateRegistry,
    ) -> Result<ExecutionPlan, PlanError> {
        let key = format!("agent:{agent}\u{1f}{}", normalise_message(message));
        if let Some(mut plan) = self.get_plan(&key) {
            for step in &mut plan.steps {
                if step.action == LLM_ACTION
                    && let Some(Value::Object(vars)) = &mut step.variables
                    && vars.contains_key("message")
                {
                    vars.insert("message".into(), Value::String(message.to_owned()));
                }
            }
            return Ok(plan);
        }
        let plan = plan_for_agent(agent, message, templates)?;
        self.cache_plan(key, plan.clone());
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(agent: &str) -> ExecutionPlan {
        ExecutionPlan {
            agent: agent.into(),
            steps: vec![],
        }
    }

    #[test]
    fn keeps_at_most_capacity_and_evicts_the_least_recent() {
        let c = PlanCache::new();
        assert_eq!(c.capacity(), 1000);
        for i in 0..1000 {
            c.cache_plan(format!("k{i}"), plan(&format!("a{i}")));
        }
        assert_eq!(c.len(), 1000);
        // touch k0 so k1 becomes the oldest
        assert_eq!(c.get_plan("k0").unwrap().agent, "a0");
        c.cache_plan("k1000", plan("a1000"));
        assert_eq!(c.len(), 1000);
        assert!(c.get_plan("k1").is_none(), "k1 was least recently used");
        assert!(c.get_plan("k0").is_some());
        assert!(c.get_plan("k2").is_some());
        // 1001 more inserts: everything earlier is gone, the slab did not grow
        for i in 0..1001 {
            c.cache_plan(format!("n{i}"), plan("n"));
        }
        assert_eq!(c.len(), 1000);
        assert!(c.get_plan("n0").is_none());
        assert!(c.get_plan("n1000").is_some());
        assert_eq!(c.lock().nodes.len(), 1000);
    }

    #[test]
    fn recency_order_follows_gets_and_puts() {
        let c = PlanCache::with_capacity(3);
        c.cache_plan("a", plan("a"));
        c.cache_plan("b", plan("b"));
        c.cache_plan("c", plan("c"));
        assert_eq!(c.keys_by_recency(), ["c", "b", "a"]);
        c.get_plan("a");
        assert_eq!(c.keys_by_recency(), ["a", "c", "b"]);
        c.cache_plan("b", plan("b2")); // replace = use
        assert_eq!(c.keys_by_recency(), ["b", "a", "c"]);
        assert_eq!(c.get_plan("b").unwrap().agent, "b2");
        c.cache_plan("d", plan("d"));
        assert_eq!(c.keys_by_recency(), ["d", "b", "a"]);
        assert!(c.get_plan("c").is_none());
        assert!(c.get_plan("missing").is_none());
        assert_eq!(
            c.keys_by_recency(),
            ["d", "b", "a"],
            "a miss changes nothing"
        );
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let c = PlanCache::with_capacity(0);
        c.cache_plan("a", plan("a"));
        assert!(c.is_empty());
        assert!(c.get_plan("a").is_none());
    }

    #[test]
    fn agent_plans_are_cached_by_normalised_message() {
        let c = PlanCache::new();
        let t = PromptTemplateRegistry::with_builtin_templates();
        let first = c.plan_for_agent("task_agent", "Plan  my week", &t).unwrap();
        assert_eq!(c.len(), 1);
        let second = c.plan_for_agent("task_agent", "plan my WEEK", &t).unwrap();
        assert_eq!(c.len(), 1, "same normalised message, same entry");
        assert_eq!(first.steps.len(), second.steps.len());
        assert_eq!(
            second.steps[1].variables.as_ref().unwrap()["message"],
            "plan my WEEK"
        );
        c.plan_for_agent("note_agent", "plan my week", &t).unwrap();
        assert_eq!(c.len(), 2, "the agent is part of the key");
        assert!(c.plan_for_agent("nobody", "x", &t).is_err());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn shared_between_threads() {
        let c = std::sync::Arc::new(PlanCache::with_capacity(50));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        c.cache_plan(format!("{t}-{i}"), plan("x"));
                        c.get_plan(&format!("{t}-{}", i / 2));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(c.len(), 50);
        assert_eq!(c.keys_by_recency().len(), 50);
    }
}
