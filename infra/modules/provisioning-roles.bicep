// What the service may do in a subscription it provisions workspaces into: create resource groups
// and the workspace's resources (Contributor), and assign only the roles the access steps give
// (engine/planner.py, docs/access.md). Role Based Access Control Administrator carries a condition
// that limits both writing and deleting role assignments to those roles for principals of type
// User or Group, and to the data role the managed identities need (the workspace's and the clusters',
// type ServicePrincipal). A condition cannot tell a managed identity from any other service principal
// (PrincipalType is User, Group or ServicePrincipal), so that one data role may go to any service
// principal but the service's own; which ones get it is decided by the planner (only identities ARM
// reports for the workspace and clusters it made). The service can never make anyone Owner, not even
// itself, nor give its own identity any role.
// Role GUIDs: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/ai-machine-learning
// and https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage. The principal id
// attribute and GuidNotEquals: https://learn.microsoft.com/azure/role-based-access-control/conditions-authorization-actions-attributes#principal-id
// Intake checks the same before anything is created (engine/confinement.py); this is the backstop.
// The condition's attributes, operators and shape are Microsoft's "Constrain roles and principal
// types" example: https://learn.microsoft.com/azure/role-based-access-control/delegate-role-assignments-examples#example-constrain-roles-and-principal-types
// and https://learn.microsoft.com/azure/role-based-access-control/conditions-authorization-actions-attributes#principal-type
// (Microsoft.Authorization/roleAssignments:PrincipalType, from @Request on write and @Resource on delete).
targetScope = 'subscription'

param principalId string

var contributor = 'b24988ac-6180-42a0-ab88-20f7382dd24c' // Contributor
var rbacAdministrator = 'f58310d9-a9f6-439a-9e8d-f62e7b41a168' // Role Based Access Control Administrator
var assignable = [
  'f6c7c914-8db3-469d-8ca1-694a8f32e121' // AzureML Data Scientist
  'e503ece1-11d0-4e8e-8e2c-7a6c3bf38815' // AzureML Compute Operator
  'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
  '69566ab7-960f-475b-8e7c-b3118f30c6bd' // Storage File Data Privileged Contributor
]
var identityRoles = [
  'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
]
var roleList = join(assignable, ', ')
var identityRoleList = join(identityRoles, ', ')
var principalTypes = '{\'User\', \'Group\'}'
var condition = '((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/write\'})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${roleList}} AND @Request[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase ${principalTypes}) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${identityRoleList}} AND @Request[Microsoft.Authorization/roleAssignments:PrincipalType] StringEqualsIgnoreCase \'ServicePrincipal\' AND @Request[Microsoft.Authorization/roleAssignments:PrincipalId] GuidNotEquals ${principalId})) AND ((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/delete\'})) OR (@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${roleList}} AND @Resource[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase ${principalTypes}) OR (@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${identityRoleList}} AND @Resource[Microsoft.Authorization/roleAssignments:PrincipalType] StringEqualsIgnoreCase \'ServicePrincipal\' AND @Resource[Microsoft.Authorization/roleAssignments:PrincipalId] GuidNotEquals ${principalId}))'

resource provision 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, contributor)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', contributor)
    description: 'Workspace Vending: create resource groups, storage, key vaults, insights and Azure ML workspaces.'
  }
}

resource grantAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, rbacAdministrator)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', rbacAdministrator)
    description: 'Workspace Vending: give users and groups the workspace roles of docs/access.md, and managed identities their data role, nothing else.'
    condition: condition
    conditionVersion: '2.0'
  }
}
