//! The catalogue client (`haven_providers::shopify_catalog`) against the fake GraphQL endpoint
//! and CDN: paging, query-cost pacing, THROTTLED retries, refused tokens and image streaming.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use haven_fake_providers::{FakeCatalog, FakeMedia, FakeMediaKind, FakeProviders, FakeRoute};
use haven_providers::shopify::{self, ShopDomain};
use haven_providers::shopify_catalog::{
    CatalogError, CatalogPageSizes, CatalogProduct, ShopifyCatalogClient,
};
use haven_providers::{ExposeSecret, HttpSettings, SecretString};

use super::{REDIRECT, consent, fake, get, shopify_client};

/// Requested cost 90 (see the fake's formula test): "pages costing ~100".
const SMALL_PAGES: CatalogPageSizes = CatalogPageSizes {
    products: 3,
    variants: 3,
    media: 2,
    variant_media: 1,
};

/// Installs the app on `shop` and returns its access token.
async fn install(fake: &FakeProviders, shop: &str) -> SecretString {
    let secret = haven_fake_providers::FakeConfig::default().shopify_client_secret;
    let client = shopify_client(fake, secret.expose_secret());
    let callback = consent(&client.authorize_url(shop, "state", REDIRECT)).await;
    client
        .exchange_code(shop, get(&callback, "code"))
        .await
        .unwrap()
        .access_token
}

fn catalog_client(fake: &FakeProviders) -> ShopifyCatalogClient {
    ShopifyCatalogClient::new(
        &fake.shopify_url_template(),
        shopify::DEFAULT_API_VERSION,
        &HttpSettings::default(),
    )
    .unwrap()
}

fn small_catalog_client(fake: &FakeProviders) -> ShopifyCatalogClient {
    catalog_client(fake).with_page_sizes(SMALL_PAGES).unwrap()
}

async fn list_all(
    client: &ShopifyCatalogClient,
    shop: &ShopDomain,
    token: &SecretString,
) -> Vec<CatalogProduct> {
    client.products(shop, token).try_collect().await.unwrap()
}

fn media_id(gid: &str) -> u64 {
    gid.strip_prefix("gid://shopify/MediaImage/")
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn catalogue_pages_every_product_variant_and_image_exactly_once() {
    let fake = fake().await;
    let shop = ShopDomain::parse("paged-store.myshopify.com").unwrap();
    let token = install(&fake, shop.as_str()).await;
    let mut catalog = FakeCatalog::generate(60, 3, 2, 1);
    // A video: not an image, so the client must skip it.
    catalog.products[7].media.push(FakeMedia {
        id: 77,
        kind: FakeMediaKind::Video,
        size: 0,
    });
    fake.set_shopify_catalog(shop.as_str(), catalog.clone());
    let client = catalog_client(&fake);

    let products = list_all(&client, &shop, &token).await;

    assert_eq!(products.len(), 60);
    let ids: HashSet<u64> = products.iter().map(|p| p.legacy_id).collect();
    assert_eq!(ids.len(), 60);
    let mut variants = HashSet::new();
    let mut images = HashSet::new();
    for (product, expected) in products.iter().zip(&catalog.products) {
        assert_eq!(product.legacy_id, expected.id);
        assert_eq!(product.id, format!("gid://shopify/Product/{}", expected.id));
        assert_eq!(product.title, expected.title);
        assert!(!product.handle.is_empty());
        assert!(!product.variants_truncated && !product.media_truncated);
        let expected_media: Vec<u64> = expected
            .media
            .iter()
            .filter(|m| m.kind != FakeMediaKind::Video)
            .map(|m| m.id)
            .collect();
        let media: Vec<u64> = product.media.iter().map(|m| media_id(&m.id)).collect();
        assert_eq!(media, expected_media);
        for image in &product.media {
            assert!(images.insert(media_id(&image.id)), "image listed twice");
            assert!(image.url.contains("/shopify-cdn/"), "{}", image.url);
            assert!(image.mime_type.is_some());
        }
        assert_eq!(product.variants.len(), 3);
        for (variant, expected) in product.variants.iter().zip(&expected.variants) {
            assert!(variants.insert(variant.legacy_id), "variant listed twice");
            assert_eq!(variant.legacy_id, expected.id);
            assert_eq!(variant.title, expected.title);
            assert_eq!(variant.sku, expected.sku);
            assert_eq!(variant.price.as_deref(), Some(expected.price.as_str()));
            let own: Vec<u64> = variant.media.iter().map(|m| media_id(&m.id)).collect();
            assert_eq!(own, expected.media.iter().map(|m| m.id).collect::<Vec<_>>());
            // The first two variants show their own image, the third the product's.
            let shown = variant.images(product);
            if own.is_empty() {
                assert_eq!(shown, product.media.as_slice());
            } else {
                assert_eq!(shown, variant.media.as_slice());
            }
        }
    }
    assert_eq!(variants.len(), 180);
    assert_eq!(images.len(), 120);
    assert_eq!(images.len(), catalog.image_count());
    // Default page size 4: fifteen pages, none throttled on a standard bucket.
    let stats = fake.shopify_graphql_stats(shop.as_str());
    assert_eq!(stats.queries, 15);
    assert_eq!(stats.throttled, 0);

    // A product with more variants or media than a page holds is flagged, not silently cut.
    let narrow = catalog_client(&fake)
        .with_page_sizes(CatalogPageSizes {
            variants: 2,
            media: 1,
            ..CatalogPageSizes::default()
        })
        .unwrap();
    let page = narrow.products_page(&shop, &token, None).await.unwrap();
    assert!(page.has_next_page);
    assert!(
        page.products
            .iter()
            .all(|p| p.variants_truncated && p.media_truncated)
    );
    assert!(page.products.iter().all(|p| p.variants.len() == 2));
}

#[tokio::test]
async fn tiny_bucket_is_paced_not_overdrawn() {
    let fake = fake().await;
    let shop = ShopDomain::parse("tiny-bucket.myshopify.com").unwrap();
    let token = install(&fake, shop.as_str()).await;
    fake.set_shopify_graphql_limits(120.0, 100.0);
    fake.set_shopify_catalog(shop.as_str(), FakeCatalog::generate(24, 3, 2, 2));
    let client = small_catalog_client(&fake);

    let products = list_all(&client, &shop, &token).await;

    assert_eq!(products.len(), 24);
    let stats = fake.shopify_graphql_stats(shop.as_str());
    assert_eq!(stats.queries, 8);
    assert!(stats.throttled <= 1, "{stats:?}");
    assert!(
        stats.min_available_after_charge.unwrap() >= 0.0,
        "{stats:?}"
    );
}

#[tokio::test]
async fn concurrent_listings_share_the_bucket() {
    let fake = fake().await;
    let shop = ShopDomain::parse("two-readers.myshopify.com").unwrap();
    let token = install(&fake, shop.as_str()).await;
    fake.set_shopify_graphql_limits(200.0, 150.0);
    fake.set_shopify_catalog(shop.as_str(), FakeCatalog::generate(15, 3, 2, 3));
    let client = small_catalog_client(&fake);
    let other = client.clone();

    let (a, b) = tokio::join!(
        list_all(&client, &shop, &token),
        list_all(&other, &shop, &token)
    );

    assert_eq!(a.len(), 15);
    assert_eq!(a, b);
    let stats = fake.shopify_graphql_stats(shop.as_str());
    assert_eq!(stats.queries, 10);
    // Both may race their very first query before either knows the bucket; after that the
    // clones hold each other's points.
    assert!(stats.throttled <= 2, "{stats:?}");
    assert!(
        stats.min_available_after_charge.unwrap() >= 0.0,
        "{stats:?}"
    );
}

#[tokio::test]
async fn throttled_answer_is_waited_out_and_retried() {
    let fake = fake().await;
    let shop = ShopDomain::parse("drained.myshopify.com").unwrap();
    let token = install(&fake, shop.as_str()).await;
    fake.set_shopify_graphql_limits(120.0, 100.0);
    fake.set_shopify_catalog(shop.as_str(), FakeCatalog::generate(5, 3, 2, 4));
    fake.drain_shopify_graphql_bucket(shop.as_str());
    // A fresh client knows nothing of the bucket, so its first query is THROTTLED.
    let client = small_catalog_client(&fake);

    let page = client.products_page(&shop, &token, None).await.unwrap();

    assert_eq!(page.products.len(), 3);
    assert!(page.has_next_page);
    let stats = fake.shopify_graphql_stats(shop.as_str());
    assert_eq!(stats.throttled, 1, "{stats:?}");
    assert_eq!(stats.queries, 1);
}

#[tokio::test]
async fn query_dearer_than_the_bucket_fails_instead_of_waiting_forever() {
    let fake = fake().await;
    let shop = ShopDomain::parse("small-plan.myshopify.com").unwrap();
    let token = install(&fake, shop.as_str()).await;
    fake.set_shopify_graphql_limits(50.0, 10.0);
    let client = small_catalog_client(&fake);

    let err = client.products_page(&shop, &token, None).await.unwrap_err();

    assert_eq!(
        err,
        CatalogError::CostExceedsBucket {
            cost: 90,
            maximum: 50
        }
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn server_errors_are_retried() {
    let fake = fake().await;
    let shop = ShopDomain::parse("flaky.myshopify.com").unwrap();
    let token = install(&fake, shop.as_str()).await;
    fake.set_shopify_catalog(shop.as_str(), FakeCatalog::generate(2, 1, 1, 5));
    fake.fail_next(FakeRoute::ShopifyGraphql, 503, 1);
    let client = catalog_client(&fake);

    let products = list_all(&client, &shop, &token).await;

    assert_eq!(products.len(), 2);
    assert_eq!(fake.shopify_graphql_stats(shop.as_str()).queries, 1);
}

#[tokio::test]
async fn wrong_token_is_refused() {
    let fake = fake().await;
    let shop = ShopDomain::parse("locked.myshopify.com").unwrap();
    let other_shop = ShopDomain::parse("other-shop.myshopify.com").unwrap();
    let other_token = install(&fake, other_shop.as_str()).await;
    let client = catalog_client(&fake);

    let wrong = SecretString::from("shpat_wrong_token_value");
    let err = client.products_page(&shop, &wrong, None).await.unwrap_err();
    assert_eq!(err, CatalogError::TokenRefused);
    assert!(!err.is_retryable());
    assert!(!format!("{err} {err:?}").contains("shpat_wrong_token_value"));

    // A real token, but for another shop.
    let first = client.products(&shop, &other_token).next().await.unwrap();
    assert_eq!(first, Err(CatalogError::TokenRefused));
}

#[tokio::test]
async fn fetch_image_streams_the_bytes_with_their_type() {
    let fake = fake().await;
    let shop = ShopDomain::parse("images.myshopify.com").unwrap();
    let token = install(&fake, shop.as_str()).await;
    let catalog = FakeCatalog::generate(3, 2, 2, 6);
    fake.set_shopify_catalog(shop.as_str(), catalog.clone());
    let client = catalog_client(&fake);
    let products = list_all(&client, &shop, &token).await;
    let expected: HashMap<u64, FakeMedia> = catalog
        .products
        .iter()
        .flat_map(|p| p.media.iter().map(|m| (m.id, *m)))
        .collect();

    // One variant's image fails once; the error says so and a second fetch succeeds.
    let flaky = &products[1].variants[0].images(&products[1])[0];
    let flaky_id = media_id(&flaky.id);
    fake.fail_image_next(flaky_id, 503, 1);
    let err = client.fetch_image(&flaky.url).await.unwrap_err();
    assert!(
        matches!(err, CatalogError::Http { status: 503, .. }) && err.is_retryable(),
        "{err:?}"
    );

    for image in products.iter().flat_map(|p| &p.media) {
        let id = media_id(&image.id);
        let media = expected[&id];
        let download = client.fetch_image(&image.url).await.unwrap();
        let content_type = download.content_type.clone().unwrap();
        assert_eq!(content_type, media.kind.content_type());
        assert_eq!(image.mime_type.as_deref(), Some(content_type.as_str()));
        assert_eq!(download.content_length, Some(media.size as u64));
        let expected_ext = match media.kind {
            FakeMediaKind::Png => "png",
            FakeMediaKind::Jpeg => "jpg",
            FakeMediaKind::Video => unreachable!("videos are not listed as images"),
        };
        assert_eq!(
            haven_providers::shopify_catalog::extension_for(&content_type),
            Some(expected_ext)
        );
        let chunks: Vec<_> = download.body.try_collect().await.unwrap();
        let body: Vec<u8> = chunks.concat();
        assert_eq!(body, media.bytes());
    }
    assert_eq!(fake.shopify_image_fetches(flaky_id), 1);
    assert_eq!(fake.shopify_image_fetches_total(), 6);

    // An image the shop does not have.
    let missing = flaky.url.replace(&flaky_id.to_string(), "1");
    let err = client.fetch_image(&missing).await.unwrap_err();
    assert!(
        matches!(err, CatalogError::Http { status: 404, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn one_product_is_found_by_its_numeric_id() {
    let fake = fake().await;
    let shop = ShopDomain::parse("single-store.myshopify.com").unwrap();
    let token = install(&fake, shop.as_str()).await;
    let catalog = FakeCatalog::generate(30, 2, 1, 4);
    let wanted = catalog.products[17].clone();
    fake.set_shopify_catalog(shop.as_str(), catalog);
    let client = catalog_client(&fake);
    let product = client
        .product(&shop, &token, wanted.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(product.legacy_id, wanted.id);
    assert_eq!(product.id, format!("gid://shopify/Product/{}", wanted.id));
    let variants: Vec<u64> = product.variants.iter().map(|v| v.legacy_id).collect();
    let want: Vec<u64> = wanted.variants.iter().map(|v| v.id).collect();
    assert_eq!(variants, want);
    assert!(client.product(&shop, &token, 1).await.unwrap().is_none());
}
