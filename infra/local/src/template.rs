//! Reads a SAM/CloudFormation template into plain JSON and resolves the few
//! intrinsic functions that the data-plane resources and the functions'
//! environment use (`Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join`, `Fn::Select`
//! is not needed). Both the short YAML tags (`!Ref X`) and the long forms
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
                "Ref" => ("Ref".to_string(), inner),
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

impl Resolver {
    /// Resolves every intrinsic function in `v` to plain values.
    pub fn resolve(&self, v: &Value) -> Result<Value> {
        match v {
            Value::Object(map) if map.len() == 1 => {
                let (k, arg) = map.iter().next().expect("len 1");
                match k.as_str() {
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
                    _ => Ok(Value::Object(
                        map.iter()
                            .map(|(k, v)| Ok((k.clone(), self.resolve(v)?)))
                            .collect::<Result<_>>()?,
                    )),
                }
            }
            Value::Object(map) => Ok(Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.resolve(v)?)))
                    .collect::<Result<_>>()?,
            )),
            Value::Array(a) => Ok(Value::Array(
                a.iter().map(|x| self.resolve(x)).collect::<Result<_>>()?,
            )),
            other => Ok(other.clone()),
        }
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
}
