//! librdkafka's ACL admin calls (CreateAcls, DescribeAcls, DeleteAcls), which the rdkafka crate
//! does not wrap. Each call runs on a private queue of the admin client and waits for its one
//! result event; every object created here is destroyed here, on every path.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char};
use std::ptr;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as sys;
use rdkafka::client::DefaultClientContext;

use super::model::{AclBinding, Operation, PatternKind, ResourceKind};
use crate::error::{Error, Result};

fn acl_error(what: &str, detail: impl Into<String>) -> Error {
    Error::Config(format!("{what}: {}", detail.into()))
}

/// Owns a native pointer and frees it with `free` when dropped.
struct Owned<T> {
    ptr: *mut T,
    free: unsafe extern "C" fn(*mut T),
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: `ptr` came from the matching librdkafka constructor and is freed once.
            unsafe { (self.free)(self.ptr) }
        }
    }
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Config(format!("ACL field {s:?} holds a NUL byte")))
}

fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as their owner.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn restype(kind: ResourceKind) -> sys::rd_kafka_ResourceType_t {
    match kind {
        ResourceKind::Topic => sys::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
        ResourceKind::Group => sys::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_GROUP,
        ResourceKind::TransactionalId => {
            sys::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID
        }
    }
}

fn pattern(kind: PatternKind) -> sys::rd_kafka_ResourcePatternType_t {
    match kind {
        PatternKind::Literal => {
            sys::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL
        }
        PatternKind::Prefixed => {
            sys::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED
        }
    }
}

fn operation(op: Operation) -> sys::rd_kafka_AclOperation_t {
    use sys::rd_kafka_AclOperation_t as O;
    match op {
        Operation::Read => O::RD_KAFKA_ACL_OPERATION_READ,
        Operation::Write => O::RD_KAFKA_ACL_OPERATION_WRITE,
        Operation::Describe => O::RD_KAFKA_ACL_OPERATION_DESCRIBE,
        Operation::DescribeConfigs => O::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS,
    }
}

fn from_native(acl: *const sys::rd_kafka_AclBinding_t) -> Option<AclBinding> {
    use sys::rd_kafka_AclOperation_t as O;
    use sys::rd_kafka_ResourcePatternType_t as P;
    use sys::rd_kafka_ResourceType_t as R;
    // SAFETY: `acl` is a binding owned by a live result event.
    let (rt, pt, op, perm) = unsafe {
        (
            sys::rd_kafka_AclBinding_restype(acl),
            sys::rd_kafka_AclBinding_resource_pattern_type(acl),
            sys::rd_kafka_AclBinding_operation(acl),
            sys::rd_kafka_AclBinding_permission_type(acl),
        )
    };
    let resource = match rt {
        R::RD_KAFKA_RESOURCE_TOPIC => ResourceKind::Topic,
        R::RD_KAFKA_RESOURCE_GROUP => ResourceKind::Group,
        R::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID => ResourceKind::TransactionalId,
        _ => return None,
    };
    let pattern = match pt {
        P::RD_KAFKA_RESOURCE_PATTERN_LITERAL => PatternKind::Literal,
        P::RD_KAFKA_RESOURCE_PATTERN_PREFIXED => PatternKind::Prefixed,
        _ => return None,
    };
    let operation = match op {
        O::RD_KAFKA_ACL_OPERATION_READ => Operation::Read,
        O::RD_KAFKA_ACL_OPERATION_WRITE => Operation::Write,
        O::RD_KAFKA_ACL_OPERATION_DESCRIBE => Operation::Describe,
        O::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS => Operation::DescribeConfigs,
        _ => return None,
    };
    if perm != sys::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW {
        return None;
    }
    // SAFETY: as above.
    let (name, principal, host) = unsafe {
        (
            text(sys::rd_kafka_AclBinding_name(acl)),
            text(sys::rd_kafka_AclBinding_principal(acl)),
            text(sys::rd_kafka_AclBinding_host(acl)),
        )
    };
    if host != "*" {
        return None;
    }
    Some(AclBinding {
        principal,
        resource,
        name,
        pattern,
        operation,
    })
}

fn new_binding(b: &AclBinding) -> Result<Owned<sys::rd_kafka_AclBinding_t>> {
    let (name, principal, host) = (cstring(&b.name)?, cstring(&b.principal)?, cstring("*")?);
    let mut errstr = [0 as c_char; 512];
    // SAFETY: all strings are NUL-terminated and outlive the call, which copies them.
    let ptr = unsafe {
        sys::rd_kafka_AclBinding_new(
            restype(b.resource),
            name.as_ptr(),
            pattern(b.pattern),
            principal.as_ptr(),
            host.as_ptr(),
            operation(b.operation),
            sys::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if ptr.is_null() {
        return Err(acl_error("invalid ACL", text(errstr.as_ptr())));
    }
    Ok(Owned {
        ptr,
        free: sys::rd_kafka_AclBinding_destroy,
    })
}

/// Runs one admin request on a private queue and returns its result event.
fn call(
    admin: &AdminClient<DefaultClientContext>,
    op: sys::rd_kafka_admin_op_t,
    timeout: Duration,
    what: &str,
    request: impl FnOnce(
        *mut sys::rd_kafka_t,
        *const sys::rd_kafka_AdminOptions_t,
        *mut sys::rd_kafka_queue_t,
    ),
) -> Result<Owned<sys::rd_kafka_event_t>> {
    let rk = admin.inner().native_ptr();
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `rk` is the live admin client; options and queue are freed by their guards
    // after the event was taken from the queue.
    unsafe {
        let options = Owned {
            ptr: sys::rd_kafka_AdminOptions_new(rk, op),
            free: sys::rd_kafka_AdminOptions_destroy,
        };
        let mut errstr = [0 as c_char; 256];
        sys::rd_kafka_AdminOptions_set_request_timeout(
            options.ptr,
            millis,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let queue = Owned {
            ptr: sys::rd_kafka_queue_new(rk),
            free: sys::rd_kafka_queue_destroy,
        };
        request(rk, options.ptr, queue.ptr);
        // The request times out on its own at `timeout`; a little more covers its report.
        let event = Owned {
            ptr: sys::rd_kafka_queue_poll(queue.ptr, millis.saturating_add(5_000)),
            free: sys::rd_kafka_event_destroy,
        };
        if event.ptr.is_null() {
            return Err(acl_error(what, format!("no answer within {timeout:?}")));
        }
        let code = sys::rd_kafka_event_error(event.ptr);
        if code != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(acl_error(
                what,
                text(sys::rd_kafka_event_error_string(event.ptr)),
            ));
        }
        Ok(event)
    }
}

fn error_text(err: *const sys::rd_kafka_error_t) -> Option<String> {
    if err.is_null() {
        return None;
    }
    // SAFETY: a non-null error owned by a live result event.
    Some(text(unsafe { sys::rd_kafka_error_string(err) }))
}

/// Every allow binding on the cluster (topics, groups, transactional ids; any principal).
pub(super) fn describe(
    admin: &AdminClient<DefaultClientContext>,
    timeout: Duration,
) -> Result<Vec<AclBinding>> {
    let mut errstr = [0 as c_char; 512];
    // SAFETY: a filter with no strings (NULL = any) and enum values; freed by its guard.
    let filter = Owned {
        ptr: unsafe {
            sys::rd_kafka_AclBindingFilter_new(
                sys::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_ANY,
                ptr::null(),
                sys::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_ANY,
                ptr::null(),
                ptr::null(),
                sys::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ANY,
                sys::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ANY,
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        },
        free: sys::rd_kafka_AclBinding_destroy,
    };
    if filter.ptr.is_null() {
        return Err(acl_error("ACL filter", text(errstr.as_ptr())));
    }
    let event = call(
        admin,
        sys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEACLS,
        timeout,
        "describing ACLs",
        // SAFETY: the filter outlives the call, which copies it.
        |rk, options, queue| unsafe { sys::rd_kafka_DescribeAcls(rk, filter.ptr, options, queue) },
    )?;
    // SAFETY: the result and its bindings live as long as `event`.
    unsafe {
        let result = sys::rd_kafka_event_DescribeAcls_result(event.ptr);
        if result.is_null() {
            return Err(acl_error("describing ACLs", "unexpected answer"));
        }
        let mut count = 0usize;
        let acls = sys::rd_kafka_DescribeAcls_result_acls(result, &mut count);
        Ok((0..count)
            .filter_map(|i| from_native(*acls.add(i)))
            .collect())
    }
}

/// The signature CreateAcls and DeleteAcls share (a filter is a binding with wildcards).
type AclRequest = unsafe extern "C" fn(
    *mut sys::rd_kafka_t,
    *mut *mut sys::rd_kafka_AclBinding_t,
    usize,
    *const sys::rd_kafka_AdminOptions_t,
    *mut sys::rd_kafka_queue_t,
);

/// Sends `bindings` with `request` and reports the first one the broker refused; `errors`
/// reads the per-binding errors of the result event, in request order.
fn change(
    admin: &AdminClient<DefaultClientContext>,
    bindings: &[AclBinding],
    timeout: Duration,
    (op, what): (sys::rd_kafka_admin_op_t, &str),
    request: AclRequest,
    errors: impl FnOnce(*mut sys::rd_kafka_event_t) -> Option<Vec<*const sys::rd_kafka_error_t>>,
) -> Result<()> {
    if bindings.is_empty() {
        return Ok(());
    }
    let owned = bindings
        .iter()
        .map(new_binding)
        .collect::<Result<Vec<_>>>()?;
    let mut raw: Vec<*mut sys::rd_kafka_AclBinding_t> = owned.iter().map(|o| o.ptr).collect();
    // SAFETY: the bindings outlive the call, which copies them.
    let event = call(admin, op, timeout, what, |rk, options, queue| unsafe {
        request(rk, raw.as_mut_ptr(), raw.len(), options, queue)
    })?;
    let errors = errors(event.ptr).ok_or_else(|| acl_error(what, "unexpected answer"))?;
    for (binding, err) in bindings.iter().zip(errors) {
        if let Some(e) = error_text(err) {
            return Err(acl_error(what, format!("{binding}: {e}")));
        }
    }
    Ok(())
}

/// Creates the bindings; the first refused one is the error.
pub(super) fn create(
    admin: &AdminClient<DefaultClientContext>,
    bindings: &[AclBinding],
    timeout: Duration,
) -> Result<()> {
    let op = sys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS;
    change(
        admin,
        bindings,
        timeout,
        (op, "creating ACLs"),
        sys::rd_kafka_CreateAcls,
        |event| {
            // SAFETY: the results live as long as the event, which outlives this closure.
            unsafe {
                let result = sys::rd_kafka_event_CreateAcls_result(event);
                if result.is_null() {
                    return None;
                }
                let mut count = 0usize;
                let results = sys::rd_kafka_CreateAcls_result_acls(result, &mut count);
                Some(
                    (0..count)
                        .map(|i| sys::rd_kafka_acl_result_error(*results.add(i)))
                        .collect(),
                )
            }
        },
    )
}

/// Deletes exactly the given bindings (a filter with every field given matches one binding).
pub(super) fn delete(
    admin: &AdminClient<DefaultClientContext>,
    bindings: &[AclBinding],
    timeout: Duration,
) -> Result<()> {
    let op = sys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETEACLS;
    change(
        admin,
        bindings,
        timeout,
        (op, "deleting ACLs"),
        sys::rd_kafka_DeleteAcls,
        |event| {
            // SAFETY: the responses live as long as the event, which outlives this closure.
            unsafe {
                let result = sys::rd_kafka_event_DeleteAcls_result(event);
                if result.is_null() {
                    return None;
                }
                let mut count = 0usize;
                let responses = sys::rd_kafka_DeleteAcls_result_responses(result, &mut count);
                Some(
                    (0..count)
                        .map(|i| sys::rd_kafka_DeleteAcls_result_response_error(*responses.add(i)))
                        .collect(),
                )
            }
        },
    )
}
