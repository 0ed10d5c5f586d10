-- Argo CD health check for ModelDeployment, read from the kstatus conditions in the
-- order kstatus (Helm 4, Flux) reads them, so Argo CD and Flux agree: Progressing when
-- kstatus says InProgress, Degraded when Failed, Healthy when Current.
-- Install: argocd-cm, key resource.customizations.health.modeldeploy.io_ModelDeployment
-- (see deploy/argocd/argocd-cm-patch.yaml).
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
-- The first Reconciling=True or Stalled=True in list order decides, as in kstatus; the
-- operator lists Reconciling first, so a revert or fallback still rolling out is
-- Progressing, and Degraded once it is done. Both modes end Degraded after a failed
-- release: RevertSpec (Stalled, reason RolledBack, until the spec is written again) and
-- KeepSpec (Stalled, reason RolledBack, while the spec names the failed version).
local ready = nil
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Reconciling" and condition.status == "True" then
    hs.message = condition.message
    return hs
  end
  if condition.type == "Stalled" and condition.status == "True" then
    hs.status = "Degraded"
    hs.message = condition.reason .. ": " .. condition.message
    return hs
  end
  if condition.type == "Ready" and ready == nil then
    ready = condition
  end
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
elseif ready ~= nil then
  hs.message = ready.reason .. ": " .. ready.message
end
return hs
