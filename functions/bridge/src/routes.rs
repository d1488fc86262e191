//! Bridge routes: which function's consumer feeds which Lambda function.

use wa_shared::functions::FunctionSpec;

pub const DEFAULT_ROUTES: &str =
    "realtime=wa-realtime,historical=wa-historical,dlq-retry=wa-dlq-retry,onboarding=wa-onboarding";

/// One route: the function's consumer (as in standalone mode) and the Lambda function to invoke.
#[derive(Debug, Clone)]
pub struct Route {
    pub spec: &'static FunctionSpec,
    /// Function name, ARN or alias, as the Invoke API takes it.
    pub function: String,
}

/// Every route of the bridge.
#[derive(Debug, Clone)]
pub struct Routes(pub Vec<Route>);

/// Parses `function=lambda-name` pairs, comma-separated.
pub fn parse(value: &str) -> Result<Routes, String> {
    let mut routes: Vec<Route> = Vec::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kind, function) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not function=lambda-name"))?;
        let Some(spec) = FunctionSpec::named(kind.trim()) else {
            return Err(format!(
                "unknown function {:?} (realtime, historical, dlq-retry, onboarding)",
                kind.trim()
            ));
        };
        if function.trim().is_empty() || routes.iter().any(|r| std::ptr::eq(r.spec, spec)) {
            return Err(format!("{pair:?}: empty or repeated route"));
        }
        routes.push(Route {
            spec,
            function: function.trim().to_owned(),
        });
    }
    if routes.is_empty() {
        return Err("no routes".into());
    }
    Ok(Routes(routes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes() {
        let r = parse(DEFAULT_ROUTES).unwrap().0;
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].spec.bin, "wa-realtime");
        let arn = parse("historical=arn:aws:lambda:eu-west-1:123:function:hist")
            .unwrap()
            .0;
        assert_eq!(
            arn[0].function,
            "arn:aws:lambda:eu-west-1:123:function:hist"
        );
        assert!(parse("").is_err());
        assert!(parse("billing=x").is_err());
        assert!(parse("realtime").is_err());
        assert!(parse("realtime=a,realtime=b").is_err());
    }
}
