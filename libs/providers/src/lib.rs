//! HTTP clients for the providers tenants connect.
