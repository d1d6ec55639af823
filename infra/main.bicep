// Workspace Vending, deployed with the Azure Developer CLI: `azd up` (docs/deploy.md).
// One resource group holds the service; the provisioning roles go to every subscription the
// service may create workspaces in.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('The azd environment name; resource names and tags derive from it.')
param environmentName string

@minLength(1)
@description('The region of the service itself (not of the workspaces it provisions: the policy says those).')
param location string

@minLength(36)
@description('Comma-separated ids of the subscriptions the service may provision workspaces into (the policy\'s environments and team targets). The service\'s own subscription is left out unless allowServiceSubscription.')
param provisioningSubscriptionIds string

@description('true only for a lab where the service and its workspaces share one subscription: the service\'s own subscription may then be a target (set allow_service_subscription in the policy too).')
param allowServiceSubscription bool = false

@description('Where alerts are e-mailed; empty: alerts fire without notifying anyone.')
param alertEmail string = ''

@description('The most instances the Flex Consumption plan may scale out to.')
param maximumInstanceCount int = 40

@secure()
@description('Slack app signing secret; empty: the Slack endpoints answer 503.')
param slackSigningSecret string = ''

@secure()
@description('Slack bot token (xoxb-...), to post results after a response_url expired.')
param slackBotToken string = ''

@secure()
@description('The security token Teams issued for the outgoing webhook; empty: the Teams endpoint answers 503.')
param teamsOutgoingWebhookSecret string = ''

@secure()
@description('A Teams Workflows webhook URL where results are posted.')
param teamsWorkflowsUrl string = ''

@secure()
@description('The key callbacks are signed with (X-Vending-Signature); empty: one is generated on the first deployment and kept.')
param callbackSigningSecret string = ''

// newGuid() may only be a parameter's default, and is evaluated on every deployment: it is written to
// the vault only when the secret is first created (modules/keyvault.bicep). Two GUIDs: 244 random bits.
@secure()
@description('Leave unset: the value a newly created callback signing secret gets.')
param callbackSigningSeed string = '${newGuid()}${newGuid()}'

@description('Set by azd from this template\'s output after the first deployment: the callback signing secret exists.')
param callbackSigningSecretExists bool = false

@description('The Microsoft Entra tenant of the API\'s app registration; empty: this subscription\'s tenant.')
param authTenantId string = ''

@minLength(1)
@description('The application (client) id of the API\'s app registration in Microsoft Entra ID (docs/deploy.md).')
param authClientId string

@description('The API\'s application ID URI (the access tokens\' audience); empty: api://<authClientId>.')
param authAudience string = ''

var abbrs = loadJsonContent('abbreviations.json')
var tenantId = empty(authTenantId) ? subscription().tenantId : authTenantId
var audience = empty(authAudience) ? 'api://${authClientId}' : authAudience
var token = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName, service: 'workspace-vending' }
var tablePrefix = 'vending'
var queueNames = ['onboarding', 'steps', 'notifications']
var deploymentContainerName = 'app-package-${token}'
// The service's own subscription is never a provisioning target by default (DESIGN section 9): its
// managed identity gets no provisioning roles here, and the app refuses it at intake
// (VENDING_SERVICE_SUBSCRIPTION_ID below, engine/confinement.py).
var ownSubscriptionId = toLower(subscription().subscriptionId)
var targets = filter(
  map(split(provisioningSubscriptionIds, ','), id => toLower(trim(id))),
  id => !empty(id) && (allowServiceSubscription || id != ownSubscriptionId)
)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}vending-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}vending-${token}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}vending${token}'
    location: location
    tags: tags
    tablePrefix: tablePrefix
    deploymentContainerName: deploymentContainerName
  }
}

module messaging 'modules/servicebus.bicep' = {
  name: 'servicebus'
  scope: rg
  params: {
    name: '${abbrs.serviceBusNamespaces}vending-${token}'
    location: location
    tags: tags
    queueNames: queueNames
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    duplicateDetectionWindow: 'PT10M'
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}vending-${token}'
    appInsightsName: '${abbrs.insightsComponents}vending-${token}'
    location: location
    tags: tags
  }
}

module vault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}vend-${take(token, 13)}'
    location: location
    tags: tags
    secretValues: {
      SLACK_SIGNING_SECRET: slackSigningSecret
      SLACK_BOT_TOKEN: slackBotToken
      TEAMS_OUTGOING_WEBHOOK_SECRET: teamsOutgoingWebhookSecret
      TEAMS_WORKFLOWS_URL: teamsWorkflowsUrl
    }
    callbackSigningSecret: callbackSigningSecret
    callbackSigningSeed: callbackSigningSeed
    callbackSigningSecretExists: callbackSigningSecretExists
  }
}

module roles 'modules/service-roles.bicep' = {
  name: 'service-roles'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    serviceBusNamespaceName: messaging.outputs.name
    keyVaultName: vault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

module app 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  // The identity must be able to read its package, secrets and queues before the app starts.
  dependsOn: [roles]
  params: {
    name: '${abbrs.webSitesFunctions}vending-${token}'
    planName: '${abbrs.webServerFarms}vending-${token}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    serviceBusNamespace: messaging.outputs.fullyQualifiedNamespace
    appInsightsConnectionString: monitoring.outputs.connectionString
    secretReferences: vault.outputs.references
    callbackSigningSecretUri: vault.outputs.callbackSigningSecretUri
    authTenantId: tenantId
    serviceSubscriptionId: subscription().subscriptionId
    authClientId: authClientId
    authAudience: audience
    tablePrefix: tablePrefix
    maximumInstanceCount: maximumInstanceCount
  }
}

module provisioning 'modules/provisioning-roles.bicep' = [for subscriptionId in targets: {
  name: 'vending-provisioning-${environmentName}'
  scope: subscription(subscriptionId)
  params: {
    principalId: identity.outputs.principalId
  }
}]

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    serviceBusNamespaceId: messaging.outputs.id
    queueNames: queueNames
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    alertEmail: alertEmail
  }
}

output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output SERVICE_API_ENDPOINT string = 'https://${app.outputs.defaultHostName}/api'
output VENDING_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output VENDING_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output VENDING_KEY_VAULT_NAME string = vault.outputs.name
// Read back by azd on the next `azd provision` (main.parameters.json): the secret is then not rewritten.
output VENDING_CALLBACK_SIGNING_SECRET_EXISTS bool = true
output VENDING_AUTH_TENANT_ID string = tenantId
output VENDING_AUTH_AUDIENCE string = audience
