//! Seed 004's file formats for one variant and day: the CSV (a header and one row, image
//! lists `|`-joined) and the JSON document. Pure: the run hands in what it gathered.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;

/// The CSV header, exactly as seed 004 lists it.
pub const CSV_HEADER: [&str; 15] = [
    "date",
    "shopId",
    "productId",
    "variantId",
    "shopifyProductId",
    "shopifyVariantId",
    "impressions",
    "addToCarts",
    "ctr",
    "orders",
    "revenue",
    "imageMediaIds",
    "shopifyImageUrls",
    "r2ImageUrls",
    "r2ImageKeys",
];

/// One variant's counts for one UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    pub impressions: i64,
    pub add_to_carts: i64,
    pub orders: i64,
    /// In cents of the shop's currency.
    pub revenue_cents: i64,
}

impl Metrics {
    /// addToCarts / impressions in ten-thousandths, rounded half up; 0 without impressions.
    pub fn ctr_bp(&self) -> i64 {
        if self.impressions <= 0 {
            return 0;
        }
        let (n, d) = (i128::from(self.add_to_carts), i128::from(self.impressions));
        i64::try_from((n * 20_000 + d) / (2 * d)).unwrap_or(i64::MAX)
    }

    /// `0.1000`: four decimals, as the CSV carries it.
    pub fn ctr_text(&self) -> String {
        decimal(self.ctr_bp(), 4)
    }

    /// `89.97`: two decimals.
    pub fn revenue_text(&self) -> String {
        decimal(self.revenue_cents, 2)
    }

    /// The JSON `metrics` object (numbers, as seed 004 shows them).
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "impressions": self.impressions,
            "addToCarts": self.add_to_carts,
            "ctr": self.ctr_bp() as f64 / 10_000.0,
            "orders": self.orders,
            "revenue": self.revenue_cents as f64 / 100.0,
        })
    }
}

/// `value / 10^scale` with exactly `scale` decimals, from an integer (no float rounding).
fn decimal(value: i64, scale: u32) -> String {
    let unit = 10i64.pow(scale);
    let sign = if value < 0 { "-" } else { "" };
    let v = value.unsigned_abs();
    let unit = unit.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        v / unit,
        v % unit,
        width = scale as usize
    )
}

/// A backed-up image as the files reference it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRef {
    /// `gid://shopify/MediaImage/N`.
    pub media_id: String,
    pub shopify_url: String,
    /// The backup's permanent address (the object store's, or the gateway's for the file store).
    pub r2_url: String,
    pub r2_key: String,
    #[serde(serialize_with = "rfc3339_millis")]
    pub backed_up_at: DateTime<Utc>,
}

fn rfc3339_millis<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Everything one variant's files say.
#[derive(Debug, Clone)]
pub struct VariantReport<'a> {
    pub day: NaiveDate,
    pub shop_id: &'a str,
    pub shop_domain: &'a str,
    pub product_id: &'a str,
    pub shopify_product_id: &'a str,
    pub variant_id: &'a str,
    pub shopify_variant_id: &'a str,
    pub metrics: Metrics,
    pub images: &'a [ImageRef],
}

impl VariantReport<'_> {
    pub fn csv(&self) -> Result<Vec<u8>, csv::Error> {
        let join =
            |f: fn(&ImageRef) -> &str| self.images.iter().map(f).collect::<Vec<_>>().join("|");
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::with_capacity(512));
        w.write_record(CSV_HEADER)?;
        w.write_record([
            self.day.format("%Y-%m-%d").to_string().as_str(),
            self.shop_id,
            self.product_id,
            self.variant_id,
            self.shopify_product_id,
            self.shopify_variant_id,
            &self.metrics.impressions.to_string(),
            &self.metrics.add_to_carts.to_string(),
            &self.metrics.ctr_text(),
            &self.metrics.orders.to_string(),
            &self.metrics.revenue_text(),
            &join(|i| &i.media_id),
            &join(|i| &i.shopify_url),
            &join(|i| &i.r2_url),
            &join(|i| &i.r2_key),
        ])?;
        w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
    }

    pub fn json_value(&self) -> serde_json::Value {
        serde_json::json!({
            "exportDate": self.day.format("%Y-%m-%d").to_string(),
            "shopId": self.shop_id,
            "shopDomain": self.shop_domain,
            "product": {
                "productId": self.product_id,
                "shopifyProductId": self.shopify_product_id,
            },
            "variant": {
                "variantId": self.variant_id,
                "shopifyVariantId": self.shopify_variant_id,
                "metrics": self.metrics.to_json(),
                "images": self.images,
            },
        })
    }

    pub fn json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = serde_json::to_vec_pretty(&self.json_value())?;
        out.push(b'\n');
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(impressions: i64, add_to_carts: i64) -> Metrics {
        Metrics {
            impressions,
            add_to_carts,
            orders: 3,
            revenue_cents: 8_997,
        }
    }

    #[test]
    fn ctr_rounds_half_up_to_four_decimals_and_is_zero_without_impressions() {
        for (imp, atc, text) in [
            (150, 15, "0.1000"),
            (3, 1, "0.3333"),
            (3, 2, "0.6667"),
            (20_000, 1, "0.0001"),
            (40_000, 1, "0.0000"),
            (20_001, 1, "0.0000"),
            (19_999, 1, "0.0001"),
            (0, 0, "0.0000"),
            (0, 5, "0.0000"),
            (2, 5, "2.5000"),
        ] {
            assert_eq!(metrics(imp, atc).ctr_text(), text, "{atc}/{imp}");
        }
        assert_eq!(metrics(150, 15).to_json()["ctr"], 0.1);
    }

    #[test]
    fn revenue_has_two_decimals() {
        assert_eq!(metrics(1, 1).revenue_text(), "89.97");
        let zero = Metrics::default();
        assert_eq!(zero.revenue_text(), "0.00");
        assert_eq!(zero.to_json()["revenue"], 0.0);
        let big = Metrics {
            revenue_cents: 12_345_678_905,
            ..zero
        };
        assert_eq!(big.revenue_text(), "123456789.05");
    }

    fn image(n: u32) -> ImageRef {
        ImageRef {
            media_id: format!("gid://shopify/MediaImage/{n}"),
            shopify_url: format!("https://cdn.shopify.com/{n}.jpg"),
            r2_url: format!("https://r2.example.com/s/products/p/variants/v/media/{n}.jpg"),
            r2_key: format!("s/products/p/variants/v/media/{n}.jpg"),
            backed_up_at: DateTime::parse_from_rfc3339("2025-11-18T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    fn report(images: &[ImageRef]) -> VariantReport<'_> {
        VariantReport {
            day: NaiveDate::from_ymd_opt(2025, 11, 18).unwrap(),
            shop_id: "shop123",
            shop_domain: "myshop.myshopify.com",
            product_id: "prod456",
            shopify_product_id: "gid://shopify/Product/123",
            variant_id: "var789",
            shopify_variant_id: "gid://shopify/ProductVariant/456",
            metrics: metrics(150, 15),
            images,
        }
    }

    #[test]
    fn csv_is_seed_004s_row() {
        let images = [image(1), image(2)];
        let text = String::from_utf8(report(&images).csv().unwrap()).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), CSV_HEADER.join(","));
        let row: Vec<String> = csv::Reader::from_reader(text.as_bytes())
            .records()
            .next()
            .unwrap()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            row[..11],
            [
                "2025-11-18",
                "shop123",
                "prod456",
                "var789",
                "gid://shopify/Product/123",
                "gid://shopify/ProductVariant/456",
                "150",
                "15",
                "0.1000",
                "3",
                "89.97"
            ]
        );
        assert_eq!(
            row[11],
            "gid://shopify/MediaImage/1|gid://shopify/MediaImage/2"
        );
        assert_eq!(
            row[14],
            "s/products/p/variants/v/media/1.jpg|s/products/p/variants/v/media/2.jpg"
        );
        // No images: empty lists, still fifteen columns.
        let none = String::from_utf8(report(&[]).csv().unwrap()).unwrap();
        assert!(none.ends_with("0.1000,3,89.97,,,,\n"), "{none}");
    }

    #[test]
    fn json_is_seed_004s_document() {
        let images = [image(1)];
        let doc: serde_json::Value =
            serde_json::from_slice(&report(&images).json().unwrap()).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "exportDate": "2025-11-18",
                "shopId": "shop123",
                "shopDomain": "myshop.myshopify.com",
                "product": {"productId": "prod456", "shopifyProductId": "gid://shopify/Product/123"},
                "variant": {
                    "variantId": "var789",
                    "shopifyVariantId": "gid://shopify/ProductVariant/456",
                    "metrics": {"impressions": 150, "addToCarts": 15, "ctr": 0.1, "orders": 3, "revenue": 89.97},
                    "images": [{
                        "mediaId": "gid://shopify/MediaImage/1",
                        "shopifyUrl": "https://cdn.shopify.com/1.jpg",
                        "r2Url": "https://r2.example.com/s/products/p/variants/v/media/1.jpg",
                        "r2Key": "s/products/p/variants/v/media/1.jpg",
                        "backedUpAt": "2025-11-18T10:00:00.000Z"
                    }]
                }
            })
        );
    }
}
