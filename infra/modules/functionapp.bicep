// The Function App on the Flex Consumption plan, Python 3.11, running as the user-assigned
// identity for every connection: no connection string and no key in its settings. Each setting
// the code reads (models/settings.py) is set here or listed as optional in docs/deploy.md
// (tests/unit/test_infra.py checks both).
param name string
param planName string
param location string
param tags object
param identityId string
param identityClientId string
param storageBlobEndpoint string
param storageQueueEndpoint string
param storageTableEndpoint string
param deploymentContainerName string
param serviceBusNamespace string
param appInsightsConnectionString string
@description('App settings holding Key Vault references (chat secrets, Workflows URL).')
param secretReferences object
@description('The Key Vault secret the app signs callbacks with, read with the identity.')
param callbackSigningSecretUri string
@description('The Microsoft Entra tenant of the API\'s app registration.')
param authTenantId string
@description('The subscription the service runs in: never a provisioning target (engine/confinement.py).')
param serviceSubscriptionId string
@description('The API\'s application (client) id.')
param authClientId string
@description('The API\'s application ID URI: the audience of its access tokens.')
param authAudience string
param tablePrefix string = 'vending'
param maximumInstanceCount int = 40
param queues object = { onboarding: 'onboarding', steps: 'steps', notifications: 'notifications' }

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

var settings = {
  // Host storage, identity-based.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
  AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
  AzureWebJobsStorage__tableServiceUri: storageTableEndpoint
  // The state store: Azure Tables in the same account.
  VENDING_STORE: 'tables'
  TablesConnection__tableServiceUri: storageTableEndpoint
  TablesConnection__credential: 'managedidentity'
  TablesConnection__clientId: identityClientId
  VENDING_TABLES_PREFIX: tablePrefix
  // The bus: Service Bus, for the triggers (host) and for sending (the code).
  VENDING_BUS: 'servicebus'
  ServiceBusConnection__fullyQualifiedNamespace: serviceBusNamespace
  ServiceBusConnection__credential: 'managedidentity'
  ServiceBusConnection__clientId: identityClientId
  OnboardingQueueName: queues.onboarding
  StepsQueueName: queues.steps
  NotificationsQueueName: queues.notifications
  VENDING_BUS_LOCK_S: '60'
  VENDING_BUS_MAX_DELIVERIES: '10'
  VENDING_BUS_DUPLICATE_WINDOW_S: '600'
  SweepSchedule: '0 */1 * * * *'
  LifecycleSchedule: '0 */5 * * * *'
  DeadLetterSchedule: '0 */5 * * * *'
  // Azure Resource Manager, as the same identity.
  VENDING_CLOUD: 'azure'
  VENDING_SERVICE_SUBSCRIPTION_ID: serviceSubscriptionId
  AZURE_CLIENT_ID: identityClientId
  // The tenant written into key vaults and compute instances: the identity's own (the service refuses to start
  // with VENDING_CLOUD=azure and no tenant).
  VENDING_TENANT_ID: tenant().tenantId
  VENDING_DATA_DIR: '/tmp/vending'
  // Telemetry, authenticated with the identity (local auth is off on Application Insights).
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // Who is calling: App Service Authentication (below) validates the caller's Entra token and passes
  // X-MS-CLIENT-PRINCIPAL; the app reads it because App Service sets WEBSITE_AUTH_ENABLED=True.
  VENDING_AUTH_MODE: 'easyauth'
  VENDING_AUTH_TENANT_ID: authTenantId
  VENDING_AUTH_CLIENT_ID: authClientId
  VENDING_AUTH_AUDIENCE: authAudience
  // One callback signing secret per deployment, in the Key Vault (adapters/secrets.py).
  VENDING_CALLBACK_SIGNING_SECRET_URI: callbackSigningSecretUri
  // The portal is served at / (host.json routePrefix ""): no Functions home page in its place.
  AzureWebJobsDisableHomepage: 'true'
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: { minTlsVersion: '1.2', ftpsState: 'Disabled' }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: identityId }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: maximumInstanceCount, instanceMemoryMB: 2048 }
      runtime: { name: 'python', version: '3.11' }
    }
  }

  resource appSettings 'config' = {
    name: 'appsettings'
    properties: union(settings, secretReferences)
  }

  // App Service Authentication (Easy Auth v2) with the Microsoft identity provider in front of the
  // REST routes: a request without a valid Entra access token for the API is answered 401 before it
  // reaches the app. The HTTP function is anonymous at the Functions level (function_app.py), so no
  // function key is needed anywhere. Shape: Microsoft.Web/sites/config 'authsettingsV2'
  // (https://learn.microsoft.com/azure/templates/microsoft.web/sites/config-authsettingsv2); provider
  // settings: https://learn.microsoft.com/azure/app-service/configure-authentication-provider-aad
  resource authentication 'config' = {
    name: 'authsettingsV2'
    properties: {
      platform: { enabled: true, runtimeVersion: '~1' }
      globalValidation: {
        requireAuthentication: true
        unauthenticatedClientAction: 'Return401'
        // Chat keeps its own signatures (docs/chatops.md) and the health probe answers anyone. A
        // trailing /* excludes everything under a path (https://github.com/MicrosoftDocs/azure-docs/issues/86514).
        // The portal's pages and assets (docs/portal.md) are excluded too, so that a browser not signed in
        // reaches the page that sends it to /.auth/login/aad rather than a bare 401; they hold no data
        // (every figure comes from /api/*, which stays behind authentication) and the app authenticates
        // a signed-in browser from the principal Easy Auth passes.
        excludedPaths: [
          '/api/chat/*'
          '/api/health'
          '/'
          '/new'
          '/approvals'
          '/signin'
          '/signout'
          '/workspaces/*'
          '/portal/*'
        ]
      }
      httpSettings: { requireHttps: true, forwardProxy: { convention: 'NoProxy' } }
      identityProviders: {
        azureActiveDirectory: {
          enabled: true
          registration: {
            clientId: authClientId
            // v2.0 access tokens (docs/security.md: requestedAccessTokenVersion 2).
            openIdIssuer: '${environment().authentication.loginEndpoint}${authTenantId}/v2.0'
          }
          // v2.0 access tokens carry the client id as `aud`; allow the application ID URI too.
          validation: { allowedAudiences: [authAudience, authClientId] }
        }
      }
      // The portal signs browsers in with Easy Auth's session cookie (AppServiceAuthSession); no tokens are
      // stored. The registration needs the web redirect URI https://<host>/.auth/login/aad/callback and ID
      // token issuance (docs/portal.md). Redirects after login stay on this host.
      login: { tokenStore: { enabled: false }, preserveUrlFragmentsForLogins: false }
    }
  }
}

output name string = app.name
output id string = app.id
output defaultHostName string = app.properties.defaultHostName
