// Operators' alerts: messages dead-lettered on any queue, and a provisioning failure rate above a
// threshold. They go to an action group when an e-mail address is given.
param location string
param tags object
param serviceBusNamespaceId string
param queueNames array
param logAnalyticsId string
param alertEmail string = ''
@description('Alert when more than this percentage of requests finishing in an hour failed.')
param failureRatePercent int = 20

resource group 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-workspace-vending'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'vending'
    enabled: true
    emailReceivers: [{ name: 'operators', emailAddress: alertEmail, useCommonAlertSchema: true }]
  }
}

var actions = empty(alertEmail) ? [] : [{ actionGroupId: group.id }]

resource deadLetters 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-vending-dead-letters'
  location: 'global'
  tags: tags
  properties: {
    description: 'A message was dead-lettered on a Workspace Vending queue. Run `python -m cli deadletters list` and see docs/messaging.md.'
    severity: 2
    enabled: true
    scopes: [serviceBusNamespaceId]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'DeadLetteredMessages'
          criterionType: 'StaticThresholdCriterion'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [{ name: 'EntityName', operator: 'Include', values: queueNames }]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    actions: actions
  }
}

resource failureRate 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-vending-failure-rate'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Workspace Vending: provisioning failure rate'
    description: 'More than ${failureRatePercent}% of the requests that finished in the last hour failed. The "Failures by error code" query of docs/monitoring.md says why.'
    severity: 2
    enabled: true
    scopes: [logAnalyticsId]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: 'AppEvents | where Name in ("WorkspaceProvisioned", "WorkspaceProvisioningFailed") | summarize Failed = countif(Name == "WorkspaceProvisioningFailed"), Finished = count() | extend FailureRate = iff(Finished == 0, 0.0, 100.0 * Failed / Finished)'
          metricMeasureColumn: 'FailureRate'
          timeAggregation: 'Maximum'
          operator: 'GreaterThan'
          threshold: failureRatePercent
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: { actionGroups: empty(alertEmail) ? [] : [group.id] }
  }
}
