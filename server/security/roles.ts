/**
 * Roles and what each may call (DESIGN §10). Readers see; services also act on the data path
 * (Acquire, Report, audit Append, idempotency Begin/Complete/Abandon, recording dead letters);
 * admins may do everything, including changing policies, forcing breakers and replaying dead
 * letters.
 */
export type Role = "reader" | "service" | "admin";

export const ROLES: readonly Role[] = ["reader", "service", "admin"];

/** What each role includes besides itself. */
const INCLUDES: Record<Role, readonly Role[]> = {
  reader: [],
  service: ["reader"],
  admin: ["reader", "service"],
};

/**
 * The role each RPC needs, by `package.Service/Method`. An RPC missing here needs admin: a new
 * method is closed until it is listed. Health checks need no token (load balancers call them).
 */
const REQUIRED: Record<string, Role | "none"> = {
  "grpc.health.v1.Health/Check": "none",
  "grpc.health.v1.Health/Watch": "none",
  "bulwark.v1.PolicyService/GetPolicy": "reader",
  "bulwark.v1.PolicyService/ListPolicies": "reader",
  "bulwark.v1.PolicyService/PutPolicy": "admin",
  "bulwark.v1.PolicyService/DeletePolicy": "admin",
  "bulwark.v1.BreakerService/Acquire": "service",
  "bulwark.v1.BreakerService/Report": "service",
  "bulwark.v1.BreakerService/GetBreaker": "reader",
  "bulwark.v1.BreakerService/ListBreakers": "reader",
  "bulwark.v1.BreakerService/ListTransitions": "reader",
  "bulwark.v1.BreakerService/Watch": "reader",
  "bulwark.v1.BreakerService/ForceBreaker": "admin",
  "bulwark.v1.AuditService/Append": "service",
  "bulwark.v1.AuditService/Query": "reader",
  "bulwark.v1.AuditService/Verify": "reader",
  "bulwark.v1.AuditService/Trace": "reader",
  "bulwark.v1.DeadLetterService/RecordDeadLetter": "service",
  "bulwark.v1.DeadLetterService/ListDeadLetters": "reader",
  "bulwark.v1.DeadLetterService/GetDeadLetter": "reader",
  "bulwark.v1.DeadLetterService/ReplayDeadLetter": "admin",
  "bulwark.v1.DeadLetterService/ResolveDeadLetter": "admin",
  "bulwark.v1.IdempotencyService/Begin": "service",
  "bulwark.v1.IdempotencyService/Complete": "service",
  "bulwark.v1.IdempotencyService/Abandon": "service",
  "bulwark.v1.IdempotencyService/GetRecord": "reader",
};

/** The role a method needs, or "none" for unauthenticated methods. */
export function requiredRole(method: string): Role | "none" {
  return REQUIRED[method] ?? "admin";
}

/** Whether `role` may call a method that needs `needed`. */
export function allows(role: Role, needed: Role): boolean {
  return role === needed || INCLUDES[role].includes(needed);
}
