//! The price table: what each provider's model costs, so every provider call can be metered in integer
//! micro-USD. Prices are written as providers publish them (USD per million tokens, input and output) and held
//! as integer micro-USD per million tokens, so cost arithmetic never rounds through floating point.
//!
//! ```toml
//! [openai."gpt-4o-mini"]
//! input = 0.15    # USD per million input tokens
//! output = 0.60   # USD per million output tokens
//! ```

use crate::GatewayError;
use std::collections::HashMap;

/// Micro-USD in one USD.
const MICRO_PER_USD: f64 = 1_000_000.0;
/// Tokens the prices are quoted for.
const TOKENS_PER_QUOTE: u128 = 1_000_000;
/// No model costs more than this per million tokens; a larger figure is a typo (e.g. micro-USD written as USD).
const MAX_USD_PER_MILLION: f64 = 100_000.0;

/// One model's price, in micro-USD per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelPrice {
    pub input_micro_usd_per_million: u64,
    pub output_micro_usd_per_million: u64,
}

impl ModelPrice {
    /// Cost of one call, rounded up to the next micro-USD: metering never undercounts.
    pub fn cost_micro_usd(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        let total = u128::from(input_tokens) * u128::from(self.input_micro_usd_per_million)
            + u128::from(output_tokens) * u128::from(self.output_micro_usd_per_million);
        u64::try_from(total.div_ceil(TOKENS_PER_QUOTE)).unwrap_or(u64::MAX)
    }
}

/// Prices by provider name (as configured under `providers.<name>`) and model.
#[derive(Clone, Debug, Default)]
pub struct PriceTable {
    prices: HashMap<(String, String), ModelPrice>,
}

impl PriceTable {
    /// Parses a price table. Errors name the file (`origin`), the key and the reason.
    pub fn parse(text: &str, origin: &str) -> Result<PriceTable, GatewayError> {
        let invalid = |key: &str, reason: String| GatewayError::InvalidPriceTable {
            file: origin.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let root: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid("", e.message().to_owned()))?;
        let mut prices = HashMap::new();
        for (provider, models) in &root {
            let models = models
                .as_table()
                .ok_or_else(|| invalid(provider, "expected a table of models".into()))?;
            for (model, price) in models {
                let key = format!("{provider}.\"{model}\"");
                let price = price
                    .as_table()
                    .ok_or_else(|| invalid(&key, "expected `input` and `output` prices".into()))?;
                if let Some(unknown) = price.keys().find(|k| *k != "input" && *k != "output") {
                    return Err(invalid(
                        &format!("{key}.{unknown}"),
                        "unknown key (expected `input` and `output`, USD per million tokens)"
                            .into(),
                    ));
                }
                let usd = |field: &str| -> Result<u64, GatewayError> {
                    let field_key = format!("{key}.{field}");
                    let value = price
                        .get(field)
                        .ok_or_else(|| invalid(&field_key, "missing".into()))?;
                    let usd = match value {
                        toml::Value::Float(f) => *f,
                        toml::Value::Integer(i) => *i as f64,
                        _ => return Err(invalid(&field_key, "expected a number of USD".into())),
                    };
                    micro_usd(usd).map_err(|reason| invalid(&field_key, reason))
                };
                prices.insert(
                    (provider.clone(), model.clone()),
                    ModelPrice {
                        input_micro_usd_per_million: usd("input")?,
                        output_micro_usd_per_million: usd("output")?,
                    },
                );
            }
        }
        Ok(PriceTable { prices })
    }

    pub fn price(&self, provider: &str, model: &str) -> Option<ModelPrice> {
        self.prices
            .get(&(provider.to_owned(), model.to_owned()))
            .copied()
    }

    /// Cost of one call; a model without a price is an error, never a free call.
    pub fn cost_micro_usd(
        &self,
        provider: &str,
        model: &str,
        input_tokens: u64,
        output_tokens: u64,
    ) -> Result<u64, GatewayError> {
        self.price(provider, model)
            .map(|p| p.cost_micro_usd(input_tokens, output_tokens))
            .ok_or_else(|| GatewayError::Unpriced {
                provider: provider.to_owned(),
                model: model.to_owned(),
            })
    }

    pub fn len(&self) -> usize {
        self.prices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }
}

/// USD per million tokens -> integer micro-USD per million tokens, refusing what cannot be a price.
fn micro_usd(usd: f64) -> Result<u64, String> {
    if !usd.is_finite() || usd < 0.0 {
        return Err("must be a price of zero or more".into());
    }
    if usd > MAX_USD_PER_MILLION {
        return Err(format!(
            "{usd} USD per million tokens is beyond any real price (write USD, not micro-USD)"
        ));
    }
    let micro = usd * MICRO_PER_USD;
    let rounded = micro.round();
    // Finer than a micro-USD per million tokens cannot be held exactly; say so rather than round silently.
    if (micro - rounded).abs() > 1e-3 {
        return Err(format!(
            "{usd} has more than six decimals (prices are held in micro-USD)"
        ));
    }
    Ok(rounded as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = r#"
        [openai."gpt-4o-mini"]
        input = 0.15
        output = 0.60

        [anthropic."claude-sonnet-4-5"]
        input = 3
        output = 15.0
    "#;

    #[test]
    fn parses_usd_into_exact_micro_usd() {
        let table = PriceTable::parse(TABLE, "prices.toml").unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.price("openai", "gpt-4o-mini"),
            Some(ModelPrice {
                input_micro_usd_per_million: 150_000,
                output_micro_usd_per_million: 600_000,
            })
        );
        assert_eq!(
            table
                .price("anthropic", "claude-sonnet-4-5")
                .unwrap()
                .output_micro_usd_per_million,
            15_000_000
        );
        assert_eq!(table.price("openai", "gpt-5"), None);
    }

    #[test]
    fn cost_is_integer_arithmetic_rounded_up() {
        let table = PriceTable::parse(TABLE, "prices.toml").unwrap();
        // 1,000 in at $0.15/M = 150 micro-USD; 500 out at $0.60/M = 300 micro-USD.
        assert_eq!(
            table
                .cost_micro_usd("openai", "gpt-4o-mini", 1_000, 500)
                .unwrap(),
            450
        );
        // One token in costs 0.15 micro-USD: rounded up, never metered as free.
        assert_eq!(
            table.cost_micro_usd("openai", "gpt-4o-mini", 1, 0).unwrap(),
            1
        );
        assert_eq!(
            table.cost_micro_usd("openai", "gpt-4o-mini", 0, 0).unwrap(),
            0
        );
        // A million tokens each way at $3 / $15 is exactly $18.
        assert_eq!(
            table
                .cost_micro_usd("anthropic", "claude-sonnet-4-5", 1_000_000, 1_000_000)
                .unwrap(),
            18_000_000
        );
        // Huge counts do not overflow.
        assert_eq!(
            table
                .cost_micro_usd("anthropic", "claude-sonnet-4-5", u64::MAX, u64::MAX)
                .unwrap(),
            u64::MAX
        );
        let err = table.cost_micro_usd("openai", "gpt-5", 10, 10).unwrap_err();
        assert!(matches!(err, GatewayError::Unpriced { .. }), "{err}");
    }

    #[test]
    fn bad_tables_name_the_file_key_and_reason() {
        let cases = [
            (
                "[openai]\n\"m\" = 1\n",
                "openai.\"m\"",
                "expected `input` and `output`",
            ),
            (
                "[openai.\"m\"]\ninput = 1\n",
                "openai.\"m\".output",
                "missing",
            ),
            (
                "[openai.\"m\"]\ninput = -1\noutput = 1\n",
                "openai.\"m\".input",
                "zero or more",
            ),
            (
                "[openai.\"m\"]\ninput = \"1\"\noutput = 1\n",
                "openai.\"m\".input",
                "number",
            ),
            (
                "[openai.\"m\"]\ninput = 150000\noutput = 1\n",
                "openai.\"m\".input",
                "micro-USD",
            ),
            (
                "[openai.\"m\"]\ninput = 0.0000001\noutput = 1\n",
                "openai.\"m\".input",
                "six decimals",
            ),
            (
                "[openai.\"m\"]\ninput = 1\noutput = 1\ncached = 1\n",
                "openai.\"m\".cached",
                "unknown key",
            ),
            ("openai = 3\n", "openai", "table of models"),
            ("[openai\n", "", "expected"),
        ];
        for (text, key, reason) in cases {
            let err = PriceTable::parse(text, "config/prices.toml").unwrap_err();
            let GatewayError::InvalidPriceTable {
                file,
                key: got_key,
                reason: got_reason,
            } = &err
            else {
                panic!("{text}: {err}");
            };
            assert_eq!(file, "config/prices.toml");
            assert_eq!(got_key, key, "{text}");
            assert!(got_reason.contains(reason), "{text}: {got_reason}");
            assert!(err.to_string().starts_with("config/prices.toml"), "{err}");
        }
    }

    #[test]
    fn the_shipped_table_parses() {
        let table = PriceTable::parse(
            include_str!("../../../config/prices.toml"),
            "config/prices.toml",
        )
        .unwrap();
        assert!(!table.is_empty());
    }
}
