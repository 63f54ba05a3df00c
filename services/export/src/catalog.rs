//! The export catalogue (README, "Exports"): seven types, their fields (key, label, default),
//! default date range and row limit, and how each field is read from the `app` schema.

use haven_proto::export::v1 as pb;

/// How a field's values are typed in `StreamRows` (and whether CSV neutralises them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Decimal,
    Bool,
    Timestamp,
    Date,
}

impl Kind {
    pub fn to_proto(self) -> pb::ValueType {
        match self {
            Kind::Text => pb::ValueType::String,
            Kind::Int => pb::ValueType::Int64,
            Kind::Decimal => pb::ValueType::Decimal,
            Kind::Bool => pb::ValueType::Bool,
            Kind::Timestamp => pb::ValueType::Timestamp,
            Kind::Date => pb::ValueType::Date,
        }
    }
}

/// One selectable field and the SQL expression that reads it.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub key: &'static str,
    pub label: &'static str,
    pub default: bool,
    pub kind: Kind,
    /// Over the type's FROM clause; derived fields join or aggregate.
    pub sql: &'static str,
}

/// One export type.
#[derive(Clone, Debug)]
pub struct ExportType {
    pub key: &'static str,
    pub label: &'static str,
    pub description: &'static str,
    pub default_date_range_days: u32,
    pub max_records: u64,
    /// FROM clause; the main table is aliased `t`.
    pub from: &'static str,
    /// The column the date range and the newest-first order apply to.
    pub time_column: &'static str,
    pub fields: &'static [Field],
}

const fn f(
    key: &'static str,
    label: &'static str,
    default: bool,
    kind: Kind,
    sql: &'static str,
) -> Field {
    Field {
        key,
        label,
        default,
        kind,
        sql,
    }
}

use Kind::*;

pub static TYPES: &[ExportType] = &[
    ExportType {
        key: "leads",
        label: "Leads",
        description: "Quiz responses and email subscribers",
        default_date_range_days: 30,
        max_records: 50_000,
        from: "app.leads t",
        time_column: "t.created_at",
        fields: &[
            f("id", "ID", true, Text, "t.id::text"),
            f("email", "Email", true, Text, "t.email"),
            f("segment", "Segment", true, Text, "t.segment"),
            f("source", "Source", true, Text, "t.source"),
            f(
                "quiz_completed",
                "Quiz Completed",
                true,
                Bool,
                "t.quiz_completed",
            ),
            f(
                "converted",
                "Converted to Customer",
                true,
                Bool,
                "t.converted",
            ),
            f("created_at", "Created At", true, Timestamp, "t.created_at"),
            f("utm_source", "UTM Source", false, Text, "t.utm_source"),
            f("utm_medium", "UTM Medium", false, Text, "t.utm_medium"),
            f(
                "utm_campaign",
                "UTM Campaign",
                false,
                Text,
                "t.utm_campaign",
            ),
        ],
    },
    ExportType {
        key: "customers",
        label: "Customers",
        description: "Customer profiles and purchase history",
        default_date_range_days: 90,
        max_records: 50_000,
        from: "app.customers t LEFT JOIN app.customer_loyalty l ON l.customer_id = t.id AND l.tenant_id = t.tenant_id",
        time_column: "t.created_at",
        fields: &[
            f("id", "ID", true, Text, "t.id::text"),
            f("email", "Email", true, Text, "t.email"),
            f(
                "shopify_customer_id",
                "Shopify ID",
                true,
                Text,
                "t.shopify_customer_id",
            ),
            f("segment", "Segment", true, Text, "t.segment"),
            f(
                "order_count",
                "Order Count",
                true,
                Int,
                "t.order_count::bigint",
            ),
            f("total_spent", "Total Spent", true, Decimal, "t.total_spent"),
            f(
                "first_order_at",
                "First Order",
                true,
                Timestamp,
                "t.first_order_at",
            ),
            f(
                "last_order_at",
                "Last Order",
                true,
                Timestamp,
                "t.last_order_at",
            ),
            f(
                "journey_stage",
                "Journey Stage",
                true,
                Text,
                "t.journey_stage",
            ),
            f(
                "loyalty_tier",
                "Loyalty Tier",
                false,
                Text,
                "COALESCE(l.tier, 'none')",
            ),
            f(
                "lifetime_points",
                "Lifetime Points",
                false,
                Int,
                "COALESCE(l.lifetime_points, 0)::bigint",
            ),
        ],
    },
    ExportType {
        key: "orders",
        label: "Orders",
        description: "Order history with line items",
        default_date_range_days: 90,
        max_records: 100_000,
        from: "app.customer_orders t",
        time_column: "t.created_at",
        fields: &[
            f("id", "ID", true, Text, "t.id::text"),
            f(
                "shopify_order_id",
                "Shopify Order ID",
                true,
                Text,
                "t.shopify_order_id",
            ),
            f(
                "customer_email",
                "Customer Email",
                true,
                Text,
                "t.customer_email",
            ),
            f("total", "Total", true, Decimal, "t.total"),
            f("subtotal", "Subtotal", true, Decimal, "t.subtotal"),
            f(
                "discount_total",
                "Discount",
                true,
                Decimal,
                "t.discount_total",
            ),
            f(
                "item_count",
                "Item Count",
                true,
                Int,
                "t.item_count::bigint",
            ),
            f("status", "Status", true, Text, "t.status"),
            f("created_at", "Created At", true, Timestamp, "t.created_at"),
            f(
                "attribution_channel",
                "Attribution Channel",
                false,
                Text,
                "t.attribution_channel",
            ),
            f("coupon_code", "Coupon Code", false, Text, "t.coupon_code"),
        ],
    },
    ExportType {
        key: "pins",
        label: "Pinterest Pins",
        description: "Pin performance and scheduling data",
        default_date_range_days: 30,
        max_records: 10_000,
        from: "app.pins t LEFT JOIN app.boards b ON b.id = t.board_id AND b.tenant_id = t.tenant_id LEFT JOIN app.pin_analytics pa ON pa.pin_id = t.id AND pa.tenant_id = t.tenant_id",
        time_column: "t.created_at",
        fields: &[
            f("id", "ID", true, Text, "t.id::text"),
            f("title", "Title", true, Text, "t.title"),
            f("board_name", "Board", true, Text, "COALESCE(b.name, '')"),
            f("status", "Status", true, Text, "t.status"),
            f(
                "impressions",
                "Impressions",
                true,
                Int,
                "COALESCE(pa.impressions, 0)",
            ),
            f("saves", "Saves", true, Int, "COALESCE(pa.saves, 0)"),
            f("clicks", "Clicks", true, Int, "COALESCE(pa.clicks, 0)"),
            f(
                "engagement_rate",
                "Engagement Rate",
                true,
                Decimal,
                "CASE WHEN COALESCE(pa.impressions, 0) = 0 THEN 0::numeric \
                 ELSE round((pa.saves + pa.clicks)::numeric / pa.impressions, 4) END",
            ),
            f(
                "published_at",
                "Published At",
                true,
                Timestamp,
                "t.published_at",
            ),
            f("link", "Link", false, Text, "t.link"),
            f(
                "pinterest_pin_id",
                "Pinterest ID",
                false,
                Text,
                "t.pinterest_pin_id",
            ),
        ],
    },
    ExportType {
        key: "quotes",
        label: "Quotes",
        description: "Quote content and generation data",
        default_date_range_days: 90,
        max_records: 10_000,
        from: "app.quotes t",
        time_column: "t.created_at",
        fields: &[
            f("id", "ID", true, Text, "t.id::text"),
            f("text", "Text", true, Text, "t.text"),
            f("attribution", "Attribution", true, Text, "t.attribution"),
            f("collection", "Collection", true, Text, "t.collection"),
            f("mood", "Mood", true, Text, "t.mood"),
            f("status", "Status", true, Text, "t.status"),
            f(
                "assets_count",
                "Assets Generated",
                true,
                Int,
                "(SELECT count(*) FROM app.assets a WHERE a.quote_id = t.id AND a.tenant_id = t.tenant_id)",
            ),
            f("created_at", "Created At", true, Timestamp, "t.created_at"),
        ],
    },
    ExportType {
        key: "assets",
        label: "Assets",
        description: "Generated design assets",
        default_date_range_days: 90,
        max_records: 50_000,
        from: "app.assets t LEFT JOIN app.quotes q ON q.id = t.quote_id AND q.tenant_id = t.tenant_id",
        time_column: "t.created_at",
        fields: &[
            f("id", "ID", true, Text, "t.id::text"),
            f("quote_text", "Quote", true, Text, "COALESCE(q.text, '')"),
            f("format", "Format", true, Text, "t.format"),
            f("status", "Status", true, Text, "t.status"),
            f(
                "quality_score",
                "Quality Score",
                true,
                Decimal,
                "t.quality_score",
            ),
            f("url", "URL", true, Text, "t.url"),
            f("created_at", "Created At", true, Timestamp, "t.created_at"),
        ],
    },
    ExportType {
        key: "analytics",
        label: "Analytics",
        description: "Daily performance metrics",
        default_date_range_days: 30,
        max_records: 1_000,
        from: "app.daily_metrics t",
        time_column: "t.date",
        fields: &[
            f("date", "Date", true, Date, "t.date"),
            f("revenue", "Revenue", true, Decimal, "t.revenue"),
            f("orders", "Orders", true, Int, "t.orders::bigint"),
            f(
                "new_customers",
                "New Customers",
                true,
                Int,
                "t.new_customers::bigint",
            ),
            f("new_leads", "New Leads", true, Int, "t.new_leads::bigint"),
            f(
                "quiz_completions",
                "Quiz Completions",
                true,
                Int,
                "t.quiz_completions::bigint",
            ),
            f(
                "pin_impressions",
                "Pin Impressions",
                true,
                Int,
                "t.pin_impressions",
            ),
            f("pin_clicks", "Pin Clicks", true, Int, "t.pin_clicks"),
        ],
    },
];

pub fn find(key: &str) -> Option<&'static ExportType> {
    TYPES.iter().find(|t| t.key == key)
}

impl ExportType {
    pub fn field(&self, key: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.key == key)
    }

    pub fn to_proto(&self, max_records: u64) -> pb::ExportType {
        pb::ExportType {
            key: self.key.into(),
            label: self.label.into(),
            description: self.description.into(),
            fields: self
                .fields
                .iter()
                .map(|f| pb::ExportField {
                    key: f.key.into(),
                    label: f.label.into(),
                    default: f.default,
                    value_type: f.kind.to_proto() as i32,
                })
                .collect(),
            default_date_range_days: self.default_date_range_days,
            max_records,
        }
    }
}
