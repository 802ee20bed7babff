//! Reads a SAM/CloudFormation template into plain JSON and resolves the few
//! intrinsic functions that the data-plane resources and the functions'
//! environment use (`Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join`, and `Fn::If` over
//! the template's `Conditions`; `Fn::Select` is not needed). Both the short YAML tags (`!Ref X`) and the long forms
//! (`{"Ref": "X"}`) are accepted, as CloudFormation accepts both.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value};

/// A parsed template: resources in declaration order, parameters with their
/// defaults, and the Globals section.
#[derive(Debug, Clone)]
pub struct Template {
    pub resources: Vec<(String, Value)>,
    pub parameters: BTreeMap<String, Value>,
    pub globals: Value,
    /// The whole template as JSON (short tags in their long forms), for checks that look
    /// beyond resources (Outputs, Conditions, ...).
    pub document: Value,
}

impl Template {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading template {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing template {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let yaml: serde_yaml::Value = serde_yaml::from_str(text)?;
        let doc = to_json(yaml)?;
        let resources = match doc.get("Resources") {
            Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => bail!("template has no Resources section"),
        };
        let parameters = match doc.get("Parameters") {
            Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => BTreeMap::new(),
        };
        Ok(Template {
            resources,
            parameters,
            globals: doc.get("Globals").cloned().unwrap_or(Value::Null),
            document: doc,
        })
    }

    /// Resources of one CloudFormation type, in declaration order.
    pub fn of_type<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.resources
            .iter()
            .filter(move |(_, r)| r.get("Type").and_then(Value::as_str) == Some(ty))
            .map(|(id, r)| (id.as_str(), r))
    }

    /// `Globals.Function.Environment.Variables`, unresolved.
    pub fn function_env(&self) -> Map<String, Value> {
        self.globals
            .pointer("/Function/Environment/Variables")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }
}

/// Converts YAML to JSON, turning CloudFormation short tags into long forms.
fn to_json(v: serde_yaml::Value) -> Result<Value> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(n)?,
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(seq.into_iter().map(to_json).collect::<Result<_>>()?),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    other => serde_yaml::to_string(&other)?.trim().to_string(),
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = to_json(tagged.value)?;
            let (key, value) = match name {
                // `!Ref` and `!Condition` have no `Fn::` in their long forms.
                "Ref" | "Condition" => (name.to_string(), inner),
                "GetAtt" => {
                    // `!GetAtt A.Arn` is the string form of `Fn::GetAtt: [A, Arn]`.
                    let value = match inner {
                        Value::String(s) => {
                            let (res, attr) = s.split_once('.').ok_or_else(|| {
                                anyhow!("!GetAtt {s}: expected Resource.Attribute")
                            })?;
                            Value::Array(vec![res.into(), attr.into()])
                        }
                        other => other,
                    };
                    ("Fn::GetAtt".to_string(), value)
                }
                other => (format!("Fn::{other}"), inner),
            };
            let mut out = Map::new();
            out.insert(key, value);
            Value::Object(out)
        }
    })
}

/// What `Ref` and `Fn::GetAtt` resolve to for resources created so far, plus
/// parameter values and pseudo parameters.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    pub refs: BTreeMap<String, String>,
    pub attrs: BTreeMap<(String, String), String>,
    /// The template's `Conditions`, evaluated against the parameters
    /// ([`Resolver::evaluate_conditions`]); what `Fn::If` and a resource's `Condition` read.
    pub conditions: BTreeMap<String, bool>,
}

/// A reference to a resource that does not exist yet: the caller creates
/// resources in dependency order by retrying later.
#[derive(Debug)]
pub struct Pending(pub String);

impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reference to {} which is not created yet", self.0)
    }
}

impl std::error::Error for Pending {}

/// `Ref: AWS::NoValue`, or an `Fn::If` that chose it: the property is left out.
fn is_no_value(v: &Value) -> bool {
    v.get("Ref").and_then(Value::as_str) == Some("AWS::NoValue")
}

impl Resolver {
    /// Evaluates the template's `Conditions` (`Fn::Equals`, `Fn::Not`, `Fn::And`,
    /// `Fn::Or`, `Condition`) with the parameter values in `refs`.
    pub fn evaluate_conditions(&mut self, template: &Template) -> Result<()> {
        let declared = template
            .document
            .get("Conditions")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for name in declared.keys() {
            let value = self
                .condition(&declared, name, &mut Vec::new())
                .with_context(|| format!("condition {name}"))?;
            self.conditions.insert(name.clone(), value);
        }
        Ok(())
    }

    fn condition(
        &self,
        declared: &Map<String, Value>,
        name: &str,
        visiting: &mut Vec<String>,
    ) -> Result<bool> {
        if let Some(v) = self.conditions.get(name) {
            return Ok(*v);
        }
        if visiting.iter().any(|n| n == name) {
            bail!("condition {name} refers to itself");
        }
        let expr = declared
            .get(name)
            .ok_or_else(|| anyhow!("no condition {name}"))?;
        visiting.push(name.to_string());
        let value = self.truth(declared, expr, visiting);
        visiting.pop();
        value
    }

    fn truth(
        &self,
        declared: &Map<String, Value>,
        expr: &Value,
        visiting: &mut Vec<String>,
    ) -> Result<bool> {
        let Some((k, arg)) = expr
            .as_object()
            .filter(|m| m.len() == 1)
            .and_then(|m| m.iter().next())
        else {
            bail!("not a condition function: {expr}");
        };
        let list = || {
            arg.as_array()
                .ok_or_else(|| anyhow!("{k} takes a list, got {arg}"))
        };
        match k.as_str() {
            "Condition" => {
                let name = arg
                    .as_str()
                    .ok_or_else(|| anyhow!("Condition takes a name"))?;
                self.condition(declared, name, visiting)
            }
            "Fn::Equals" => {
                let a = list()?;
                if a.len() != 2 {
                    bail!("Fn::Equals takes two values");
                }
                let text = |v: &Value| -> Result<String> {
                    let v = self.resolve(v)?;
                    Ok(v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()))
                };
                Ok(text(&a[0])? == text(&a[1])?)
            }
            "Fn::Not" => match list()?.as_slice() {
                [one] => Ok(!self.truth(declared, one, visiting)?),
                _ => bail!("Fn::Not takes one condition"),
            },
            "Fn::And" => {
                for c in list()? {
                    if !self.truth(declared, c, visiting)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            "Fn::Or" => {
                for c in list()? {
                    if self.truth(declared, c, visiting)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            other => bail!("{other} is not a condition function"),
        }
    }

    /// Whether a resource is created: no `Condition`, or a true one.
    pub fn creates(&self, resource: &Value) -> Result<bool> {
        match resource.get("Condition") {
            None => Ok(true),
            Some(c) => {
                let name = c
                    .as_str()
                    .ok_or_else(|| anyhow!("a resource's Condition is a name"))?;
                self.conditions
                    .get(name)
                    .copied()
                    .ok_or_else(|| anyhow!("no condition {name}"))
            }
        }
    }

    /// Resolves every intrinsic function in `v` to plain values. A property whose value
    /// is `AWS::NoValue` (directly or chosen by `Fn::If`) is left out, as CloudFormation
    /// does.
    pub fn resolve(&self, v: &Value) -> Result<Value> {
        match v {
            Value::Object(map) if map.len() == 1 => {
                let (k, arg) = map.iter().next().expect("len 1");
                match k.as_str() {
                    "Fn::If" => {
                        let parts = arg
                            .as_array()
                            .filter(|a| a.len() == 3)
                            .ok_or_else(|| anyhow!("Fn::If takes [Condition, then, else]"))?;
                        let name = parts[0]
                            .as_str()
                            .ok_or_else(|| anyhow!("Fn::If's condition is a name"))?;
                        let chosen = match self.conditions.get(name) {
                            Some(true) => &parts[1],
                            Some(false) => &parts[2],
                            None => bail!("Fn::If: no condition {name}"),
                        };
                        if is_no_value(chosen) {
                            Ok(chosen.clone())
                        } else {
                            self.resolve(chosen)
                        }
                    }
                    "Ref" if is_no_value(v) => Ok(v.clone()),
                    "Ref" => {
                        let name = arg.as_str().ok_or_else(|| anyhow!("Ref takes a string"))?;
                        self.refs
                            .get(name)
                            .map(|s| Value::String(s.clone()))
                            .ok_or_else(|| Pending(name.to_string()).into())
                    }
                    "Fn::GetAtt" => {
                        let parts = arg
                            .as_array()
                            .filter(|a| a.len() == 2)
                            .ok_or_else(|| anyhow!("Fn::GetAtt takes [Resource, Attribute]"))?;
                        let res = parts[0].as_str().unwrap_or_default().to_string();
                        let attr = parts[1].as_str().unwrap_or_default().to_string();
                        self.attrs
                            .get(&(res.clone(), attr))
                            .map(|s| Value::String(s.clone()))
                            .ok_or_else(|| Pending(res).into())
                    }
                    "Fn::Sub" => {
                        let (text, vars) = match arg {
                            Value::String(s) => (s.clone(), Map::new()),
                            Value::Array(a) if a.len() == 2 => (
                                a[0].as_str().unwrap_or_default().to_string(),
                                a[1].as_object().cloned().unwrap_or_default(),
                            ),
                            _ => bail!("Fn::Sub takes a string or [string, map]"),
                        };
                        self.substitute(&text, &vars).map(Value::String)
                    }
                    "Fn::Join" => {
                        let parts = arg
                            .as_array()
                            .filter(|a| a.len() == 2)
                            .ok_or_else(|| anyhow!("Fn::Join takes [sep, list]"))?;
                        let sep = parts[0].as_str().unwrap_or_default();
                        let list = self.resolve(&parts[1])?;
                        let items: Vec<String> = list
                            .as_array()
                            .ok_or_else(|| anyhow!("Fn::Join list"))?
                            .iter()
                            .map(|x| {
                                x.as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| x.to_string())
                            })
                            .collect();
                        Ok(Value::String(items.join(sep)))
                    }
                    _ => self.resolve_map(map),
                }
            }
            Value::Object(map) => self.resolve_map(map),
            Value::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for x in a {
                    let x = self.resolve(x)?;
                    if !is_no_value(&x) {
                        out.push(x);
                    }
                }
                Ok(Value::Array(out))
            }
            other => Ok(other.clone()),
        }
    }

    fn resolve_map(&self, map: &Map<String, Value>) -> Result<Value> {
        let mut out = Map::new();
        for (k, v) in map {
            let v = self.resolve(v)?;
            if !is_no_value(&v) {
                out.insert(k.clone(), v);
            }
        }
        Ok(Value::Object(out))
    }

    fn substitute(&self, text: &str, vars: &Map<String, Value>) -> Result<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| anyhow!("unclosed ${{ in Fn::Sub"))?;
            let name = &after[..end];
            let value = if let Some(v) = vars.get(name) {
                self.resolve(v)?
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("Fn::Sub variable {name} is not a string"))?
            } else if let Some((res, attr)) = name.split_once('.') {
                self.attrs
                    .get(&(res.to_string(), attr.to_string()))
                    .cloned()
                    .ok_or_else(|| Pending(res.to_string()))?
            } else {
                self.refs
                    .get(name)
                    .cloned()
                    .ok_or_else(|| Pending(name.to_string()))?
            };
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_tags_become_long_forms_and_resolve() {
        let t = Template::parse(
            "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: !Sub '${AWS::StackName}-q'\n      Redrive: !GetAtt D.Arn\n      Plain: !Ref D\n",
        )
        .unwrap();
        let (_, q) = t.of_type("AWS::SQS::Queue").next().unwrap();
        assert_eq!(
            q["Properties"]["Redrive"],
            serde_json::json!({"Fn::GetAtt": ["D", "Arn"]})
        );
        let mut r = Resolver::default();
        r.refs.insert("AWS::StackName".into(), "s1".into());
        let err = r.resolve(&q["Properties"]).unwrap_err();
        assert!(err.downcast_ref::<Pending>().is_some(), "{err}");
        r.refs.insert("D".into(), "dlq-url".into());
        r.attrs.insert(("D".into(), "Arn".into()), "arn:dlq".into());
        let p = r.resolve(&q["Properties"]).unwrap();
        assert_eq!(p["QueueName"], "s1-q");
        assert_eq!(p["Redrive"], "arn:dlq");
        assert_eq!(p["Plain"], "dlq-url");
    }

    #[test]
    fn conditions_choose_fn_if_branches_and_leave_out_no_value() {
        let t = Template::parse(
            r#"
Parameters:
  Topic: { Type: String, Default: "" }
  Mode: { Type: String, Default: secret }
Conditions:
  OwnTopic: !Equals [!Ref Topic, ""]
  Cert: !Equals [!Ref Mode, certificate]
  OwnTopicNoCert: !And [!Condition OwnTopic, !Not [!Condition Cert]]
  Either: !Or [!Condition Cert, !Equals [!Ref Mode, "x"]]
Resources:
  T:
    Type: AWS::SNS::Topic
    Condition: OwnTopic
  A:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Actions: [!If [OwnTopic, !Ref T, !Ref Topic]]
      Gone: !If [Cert, !Ref AWS::NoValue, kept]
      List: [a, !If [Cert, b, !Ref AWS::NoValue]]
"#,
        )
        .unwrap();
        let mut r = Resolver::default();
        r.refs.insert("Topic".into(), String::new());
        r.refs.insert("Mode".into(), "certificate".into());
        r.refs.insert("T".into(), "arn:own".into());
        r.evaluate_conditions(&t).unwrap();
        assert_eq!(
            r.conditions,
            BTreeMap::from([
                ("Cert".to_string(), true),
                ("Either".to_string(), true),
                ("OwnTopic".to_string(), true),
                ("OwnTopicNoCert".to_string(), false),
            ])
        );
        let (_, topic) = t.of_type("AWS::SNS::Topic").next().unwrap();
        assert!(r.creates(topic).unwrap());
        let (_, alarm) = t.of_type("AWS::CloudWatch::Alarm").next().unwrap();
        let p = r.resolve(&alarm["Properties"]).unwrap();
        assert_eq!(
            p,
            serde_json::json!({"Actions": ["arn:own"], "List": ["a", "b"]})
        );

        let mut r = Resolver::default();
        r.refs.insert("Topic".into(), "arn:theirs".into());
        r.refs.insert("Mode".into(), "secret".into());
        r.evaluate_conditions(&t).unwrap();
        assert!(!r.creates(topic).unwrap());
        let p = r.resolve(&alarm["Properties"]).unwrap();
        assert_eq!(
            p,
            serde_json::json!({"Actions": ["arn:theirs"], "Gone": "kept", "List": ["a"]})
        );
    }
}
